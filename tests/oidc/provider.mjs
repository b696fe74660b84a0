// The OpenID provider of the SSO end-to-end tests: panva's oidc-provider on
// 127.0.0.1:$PORT with a fresh RSA signing key at every start, PKCE required,
// a login form that checks passwords, consent granted automatically, and the
// clients the tests use (redirecting to the sidecar at $SIDECAR_URL).
// Started and stopped by tests/src/oidc_provider.rs; https with TLS_CERT/TLS_KEY.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const sidecar = process.env.SIDECAR_URL;
// With TLS_CERT and TLS_KEY (PEM files) it serves https.
const tls = process.env.TLS_CERT
  ? { cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) }
  : null;
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;

// name → password and claims. A wrong password ends the login with access_denied.
const users = {
  ada: { password: 'ada-password', email: 'ada@example.org', name: 'Ada Lovelace', groups: ['admins'] },
  bob: { password: 'bob-password', email: 'bob@example.org', name: 'Bob Builder', groups: [] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const client = (id, provider, extra = {}) => ({
  client_id: id,
  redirect_uris: [`${sidecar}/auth/${provider}/callback`],
  post_logout_redirect_uris: [`${sidecar}/`],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...extra,
});

const oidc = new Provider(issuer, {
  clients: [
    client('confidential', 'oidc', { client_secret: 'confidential-secret-0123456789abcdef' }),
    client('public', 'oidc-public', { token_endpoint_auth_method: 'none' }),
    client('oauth2', 'generic', { client_secret: 'oauth2-secret-0123456789abcdef' }),
    // Signs ID tokens with its client secret (HS256): not a key the sidecar allows.
    client('hs256', 'oidc-hs256', {
      client_secret: 'hs256-secret-0123456789abcdef0123456789',
      id_token_signed_response_alg: 'HS256',
    }),
  ],
  jwks: { keys: [jwk] },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
  pkce: { required: () => true },
  cookies: { keys: ['oidc-test-cookie-key-0123456789'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
  async findAccount(_ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, email_verified: true, name: user.name, groups: user.groups };
      },
    };
  },
  // First-party clients: every requested scope and claim is granted without a consent page.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});
oidc.proxy = false;

const form = (uid, message = '') => `<!doctype html><title>Log in</title><p>${message}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login"><input name="password" type="password"><button>Log in</button></form>`;

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  const details = await oidc.interactionDetails(req, res);
  if (details.uid !== match[1]) throw new Error('interaction mismatch');
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(form(details.uid));
    return;
  }
  const fields = await body(req);
  const user = users[fields.get('login')];
  const result = user && user.password === fields.get('password')
    ? { login: { accountId: fields.get('login') } }
    : { error: 'access_denied', error_description: 'wrong username or password' };
  await oidc.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const callback = oidc.callback();
const handler = (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(e));
    });
  } else {
    callback(req, res);
  }
};
(tls ? createTlsServer(tls, handler) : createServer(handler))
  .listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));

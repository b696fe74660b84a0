// A SAML login as a user makes it: opens `input.start_url` (the sidecar's
// /auth/{provider}/login, or the IdP's IdP-initiated URL), fills the IdP's
// password form with `input.username`/`input.password`, submits it, lets
// the IdP's auto-posting form carry the Response to the ACS, and waits for
// a URL starting with `input.done_prefix`. Returns the final URL, the
// cookies of the browser, the ACS answer's status and the time from the
// ACS POST to its answer, and every request made.
import { launch, main } from './chromium.mjs';

await main(async (input) => {
  const { context, page, requests } = await launch(input);
  try {
    const acs = { status: null, ms: null, body: null };
    let postedAt = null;
    page.on('request', (request) => {
      if (request.method() === 'POST' && request.url().includes('/callback')) postedAt = Date.now();
    });
    page.on('response', async (response) => {
      const request = response.request();
      if (request.method() === 'POST' && request.url().includes('/callback')) {
        acs.ms = Date.now() - postedAt;
        acs.status = response.status();
        if (response.status() !== 303) acs.body = await response.text().catch(() => null);
      }
    });
    await page.goto(input.start_url);
    await page.fill('#username', input.username);
    await page.fill('#password', input.password);
    await Promise.all([page.waitForURL((url) => url.href.startsWith(input.done_prefix) || url.href.includes('/callback')), page.click('#submit')]);
    await page.waitForLoadState('load');
    await page.screenshot({ path: `${input.artifacts}/saml-login.png` });
    return {
      url: page.url(),
      cookies: await context.cookies(),
      acs,
      requests,
    };
  } finally {
    await context.close();
  }
});

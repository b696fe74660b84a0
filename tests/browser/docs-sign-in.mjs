// Opens the sidecar's /docs/ (input.url) in authenticated mode with no
// credentials, signs in through the form with input.key, waits for Swagger
// UI to render, then follows the link to the SQL API reference in the
// document's description and lists its capabilities. Returns the status of
// the form's page, the sign-in cookie's attributes, the link and status of
// the reference, every request made and the console errors after the
// sign-in (a CSP violation shows there): tests/tests/docs.rs.
import { launch, main } from './chromium.mjs';

await main(async (input) => {
  const { context, page, requests } = await launch(input);
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  try {
    const form = await page.goto(input.url);
    await page.fill('#key', input.key);
    await Promise.all([page.waitForURL(input.url), page.click('button[type=submit]')]);
    // Chromium logs the form page's own 401: count errors from here on.
    consoleErrors.length = 0;
    await page.waitForSelector('.opblock-summary-path');
    const title = await page.textContent('.info .title');
    const cookie = (await context.cookies()).find((c) => c.name === 'pg_integration_docs');
    // Swagger UI opens a description's links in a new tab.
    const link = page.locator('.info a', { hasText: 'SQL API reference' });
    const sqlHref = await link.getAttribute('href');
    const opened = context.waitForEvent('page');
    await link.click();
    const sql = (await link.getAttribute('target')) === '_blank' ? await opened : page;
    await sql.waitForURL(/\/docs\/sql$/);
    await sql.waitForSelector('h1');
    const sqlStatus = (await sql.reload()).status();
    const sqlHeading = await sql.textContent('h1');
    const capabilities = await sql.$$eval('section > h2', (hs) => hs.map((h) => h.textContent));
    await sql.screenshot({ path: `${input.artifacts}/docs-sql.png`, fullPage: true });
    return {
      form_status: form.status(),
      title,
      cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, secure: cookie.secure },
      sql_href: sqlHref,
      sql_status: sqlStatus,
      sql_heading: sqlHeading,
      capabilities,
      requests,
      console_errors: consoleErrors,
    };
  } finally {
    await context.close();
  }
});

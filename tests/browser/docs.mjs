// Opens the sidecar's /docs (input.url), waits for Swagger UI to render the
// document and lists the paths it shows. Then, for each of
// input.deliveries ({webhook, payload, key?}), uses "Try it out" on
// POST /webhooks/{webhook} with the payload as the body, after giving the
// key with the Authorize button when there is one, and reports the answer
// the page got. Also returns every request made and the console errors (a
// Content-Security-Policy violation shows there): tests/tests/docs.rs.
import { launch, main } from './chromium.mjs';

/// Enters `key` as the `apiKeyBearer` credential in the Authorize dialog.
async function authorize(page, key) {
  await page.locator('.scheme-container button.authorize').click();
  const scheme = page.locator('.auth-container', { hasText: 'apiKeyBearer' });
  await scheme.locator('input').fill(key);
  await scheme.locator('button.authorize').click();
  await page.locator('.dialog-ux button.close-modal').click();
}

/// Executes POST `path` with `payload` from its operation block.
async function deliver(page, path, payload) {
  const block = page.locator('.opblock', {
    has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
  });
  await block.locator('.opblock-summary').first().click();
  await block.locator('textarea.body-param__text').fill(JSON.stringify(payload));
  const answered = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === path);
  await block.locator('button.execute').click();
  const response = await answered;
  const shown = block.locator('.live-responses-table tbody .response-col_status').first();
  await shown.waitFor();
  return {
    status: response.status(),
    answer: await response.text(),
    shown_status: (await shown.textContent()).trim(),
  };
}

await main(async (input) => {
  const { context, page, requests } = await launch(input);
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  try {
    await page.goto(input.url);
    await page.waitForSelector('.opblock-summary-path');
    const title = await page.textContent('.info .title');
    const paths = await page.$$eval('.opblock-summary-path', (spans) =>
      spans.map((s) => s.getAttribute('data-path') ?? s.textContent.replaceAll('\u200b', '')));
    const deliveries = [];
    for (const { webhook, payload, key } of input.deliveries) {
      if (key) await authorize(page, key);
      deliveries.push(await deliver(page, `/webhooks/${webhook}`, payload));
    }
    await page.screenshot({ path: `${input.artifacts}/docs.png`, fullPage: true });
    return { title, paths, deliveries, requests, console_errors: consoleErrors };
  } finally {
    await context.close();
  }
});

// Opens `input.url` and returns its title and the requests made: the check
// that the browser harness itself works (tests/tests/browser.rs).
import { launch, main } from './chromium.mjs';

await main(async (input) => {
  const { context, page, requests } = await launch(input);
  try {
    await page.goto(input.url);
    await page.screenshot({ path: `${input.artifacts}/smoke.png` });
    return { title: await page.title(), text: await page.textContent('body'), requests };
  } finally {
    await context.close();
  }
});

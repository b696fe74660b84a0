// Shared by the browser scripts: reads the test's input (JSON on stdin),
// starts Debian's Chromium headless with a fresh profile, records every
// request the page makes, and prints the script's result as one JSON line.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

/// The input the Rust side wrote to stdin: at least `chromium` (the
/// executable), `profile` (an empty folder) and `artifacts` (for screenshots).
export function readInput() {
  return JSON.parse(readFileSync(0, 'utf8'));
}

/// Starts the browser; `requests` collects the URL of every request any
/// page of the context makes, in order.
export async function launch(input) {
  const context = await chromium.launchPersistentContext(input.profile, {
    executablePath: input.chromium,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
  const requests = [];
  context.on('request', (request) => requests.push(request.url()));
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(input.timeout_ms ?? 30000);
  return { context, page, requests };
}

/// Runs `body(input)` and prints what it returns (or the error) as JSON.
export async function main(body) {
  const input = readInput();
  try {
    const result = await body(input);
    process.stdout.write(JSON.stringify({ ok: true, result }) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }) + '\n');
    process.exitCode = 1;
  }
}

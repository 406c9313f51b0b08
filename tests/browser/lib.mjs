// Shared by the browser tests: Debian's Chromium through playwright-core, the service under test (its
// base URL and tokens come from the environment, set by tests/Integration.Tests/Browser), screenshots.
import { mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const baseUrl = required('SBX_BASE_URL').replace(/\/$/, '');
export const artifacts = process.env.SBX_BROWSER_ARTIFACTS ?? join(process.cwd(), 'artifacts');
mkdirSync(artifacts, { recursive: true });

const TIMEOUT = Number(process.env.SBX_BROWSER_TIMEOUT_MS ?? 60_000);

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: the browser tests are started by tests/Integration.Tests (BrowserTests).`);
  return value;
}

/** Chromium with the flags that work on these machines, a throw-away profile, and a log of every request. */
export async function openBrowser() {
  const profile = await mkdtemp(join(tmpdir(), 'sbx-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.SBX_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
    viewport: { width: 1280, height: 860 },
    timeout: TIMEOUT,
  });
  browser.setDefaultTimeout(TIMEOUT);
  const foreign = [];
  const errors = [];
  browser.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(baseUrl) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
  });
  browser.on('weberror', (error) => errors.push(String(error.error())));
  return {
    context: browser,
    /** Requests to anywhere but the service: the pages must load nothing from the internet. */
    foreign,
    /** Uncaught errors in the pages. */
    errors,
    async page({ width = 1280, height = 860 } = {}) {
      const page = await browser.newPage();
      await page.setViewportSize({ width, height });
      return page;
    },
    async close() {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Waits until the locator's text matches, failing with what the page showed instead. */
export async function waitForText(locator, pattern, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last = '';
  for (;;) {
    last = (await locator.textContent().catch(() => null)) ?? '';
    if (pattern instanceof RegExp ? pattern.test(last) : last.includes(pattern)) return last;
    if (Date.now() > deadline) throw new Error(`Expected ${locator} to show ${pattern}, but it shows ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(artifacts, name), fullPage: true });
}

/** Signs in by pasting a token, as a person with a token from their identity provider would. */
export async function pasteToken(page, token) {
  await page.locator('#token-input').fill(token);
  await page.getByRole('button', { name: 'Use this token' }).click();
}

export async function api(path, token, body) {
  const response = await fetch(baseUrl + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

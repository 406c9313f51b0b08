// The interactive API docs (/docs, Scalar) in a real browser: the reference renders from the served document,
// nothing is requested from outside the service, the content security policy blocks nothing, and no vendor
// AI, MCP or SDK button is offered.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { baseUrl, openBrowser, screenshot, waitForText } from './lib.mjs';

let browser;

before(async () => { browser = await openBrowser(); });
after(async () => { await browser?.close(); });

test('/docs renders the API reference offline under the pages\' security headers', async () => {
  const page = await browser.page();
  const console = [];
  page.on('console', (message) => console.push(`${message.type()}: ${message.text()}`));
  const response = await page.goto(`${baseUrl}/docs`);

  const headers = response.headers();
  assert.match(headers['content-security-policy'] ?? '', /default-src 'self'; script-src 'self' 'nonce-[A-Za-z0-9+/=]+'/);
  assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['referrer-policy'], 'no-referrer');
  assert.equal(headers['x-frame-options'], 'DENY');

  await waitForText(page.locator('body'), 'Sandbox.Audited API');
  await waitForText(page.locator('body'), /Runs[\s\S]*Audit/);
  await page.waitForLoadState('networkidle');
  await screenshot(page, 'docs.png');

  assert.deepEqual(browser.foreign, [], 'requests to other origins');
  assert.deepEqual(console.filter((m) => /Content Security Policy|Refused to/i.test(m)), [], 'blocked by the content security policy');
  assert.deepEqual(browser.errors, [], 'uncaught errors');
  await page.getByText('Runs', { exact: true }).first().click();
  await waitForText(page.locator('body'), '/v1/runs/{id}/stream');
  const text = await page.locator('body').innerText();
  for (const vendor of ['Ask AI', 'Generate SDK', 'Generate MCP', 'Powered by Scalar'])
    assert.ok(!text.includes(vendor), `the page offers "${vendor}"`);
});

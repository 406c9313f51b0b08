// The playground in a real browser: sign in, type code, run it, see the output; a denied run shows the
// policy's reasons; the page works at phone width and loads nothing from anywhere but the service.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { baseUrl, openBrowser, screenshot, waitForText } from './lib.mjs';

const tenant = process.env.SBX_TENANT ?? 'tenant-browser';
let browser;

before(async () => { browser = await openBrowser(); });
after(async () => { await browser?.close(); });

async function devSignIn(page, subject) {
  await page.goto(`${baseUrl}/`);
  await page.locator('#dev-form').waitFor({ state: 'visible' });
  await page.getByLabel('Subject').fill(subject);
  await page.getByLabel('Tenant').fill(tenant);
  await page.getByLabel('Role').selectOption('runner');
  await page.getByRole('button', { name: 'Get a development token' }).click();
  await waitForText(page.locator('#who-name'), `${subject} @ ${tenant}`);
}

async function typeCode(page, code) {
  const editor = page.locator('.cm-content');
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type(code);
}

test('a person types code, runs it with Ctrl+Enter and sees the output, its hash and the run in the list', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-alice');
  assert.equal(await page.locator('.cm-lineNumbers').count(), 1, 'the editor shows line numbers');

  await typeCode(page, 'import sys; print("hello, " + sys.stdin.read().strip())');
  await page.getByLabel('Standard input').fill('browser');
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+Enter');

  await waitForText(page.locator('#status'), 'Succeeded');
  assert.equal(await page.locator('#stdout').textContent(), 'hello, browser\n');
  assert.equal(await page.locator('#exit-code').textContent(), '0');
  assert.match(await page.locator('#duration').textContent(), /^\d+(\.\d+)? (ms|s)$/);
  assert.equal(await page.locator('#stdout-sha').textContent(), createHash('sha256').update('hello, browser\n').digest('hex'));
  assert.ok(await page.locator('.cm-line span[class]').count() > 0, 'the code is highlighted');
  await waitForText(page.locator('#recent tbody'), 'python');

  await screenshot(page, 'playground.png');
  await page.close();
});

test('choosing JavaScript loads its example, which runs with the Run button', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-bob');
  await page.getByLabel('Language').selectOption('javascript');
  await waitForText(page.locator('.cm-content'), 'console.log');
  await page.getByRole('button', { name: 'Run' }).click();
  await waitForText(page.locator('#status'), 'Succeeded');
  assert.match(await page.locator('#stdout').textContent(), /^Hello, world!\nsquares: \[ 0, 1, 4, 9, 16, 25 \]\n$/);
  await page.close();
});

test('a run the policy denies shows the policy\'s reasons', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-carol');
  await typeCode(page, 'print("secret")');
  await page.getByLabel('Data classification').selectOption('restricted');
  await page.getByRole('button', { name: 'Run' }).click();

  await waitForText(page.locator('#status'), 'Denied by policy');
  const problem = page.locator('#problem');
  await waitForText(problem, 'Denied by policy');
  const reasons = await problem.locator('.reasons li').allTextContents();
  assert.ok(reasons.length > 0, 'the reasons are listed');
  assert.ok(reasons.some((r) => /reviewer/.test(r)), `a reason names the missing reviewer role: ${JSON.stringify(reasons)}`);
  assert.equal(await page.locator('#stdout').textContent(), '');

  await screenshot(page, 'playground-denied.png');
  await page.close();
});

test('at phone width everything fits without sideways scrolling', async () => {
  const page = await browser.page({ width: 390, height: 844 });
  await devSignIn(page, 'browser-dan');
  await page.getByRole('button', { name: 'Run' }).click();
  await waitForText(page.locator('#status'), 'Succeeded');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await screenshot(page, 'phone-width.png');
  await page.close();
});

test('the pages load nothing from anywhere but the service and raise no errors', () => {
  assert.deepEqual(browser.foreign, []);
  assert.deepEqual(browser.errors, []);
});

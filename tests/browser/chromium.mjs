// Debian's Chromium (playwright-core never downloads a browser), started headless with what
// this machine's closed network needs: no background networking, no QUIC, no component
// updates; autoplay allowed (the pages play muted video).
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function launchChromium(profileDir, extraArgs = []) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
}

// Debian's Firefox ESR, headless, driven over WebDriver BiDi by puppeteer-core (playwright-core
// drives only its own patched Firefox builds). Autoplay allowed. The page object answers the
// calls page.mjs makes (goto, evaluate, screenshot, on console/pageerror/response).
export async function launchFirefox() {
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    timeout: 30000,
    extraPrefsFirefox: { 'media.autoplay.default': 0, 'media.autoplay.blocking_policy': 0 },
  });
  return { browser, page: await browser.newPage() };
}

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

// WebKit, Safari's engine: WebKitGTK's MiniBrowser (Debian's webkit2gtk-driver) driven by
// WebKitWebDriver over the W3C WebDriver protocol, on a virtual X display (Xvfb). The
// page object answers goto, evaluate (of a function with no arguments) and screenshot; WebDriver
// reports no console messages or responses.
export async function launchWebKit() {
  const { spawn } = await import('node:child_process');
  const { createServer } = await import('node:net');
  const { writeFileSync } = await import('node:fs');
  const port = await new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
  // A display of its own (numbered after the port, so parallel runs do not meet).
  const display = `:${100 + (port % 800)}`;
  const xvfb = spawn('Xvfb', [display, '-nolisten', 'tcp', '-screen', '0', '1280x800x24'], { stdio: 'ignore' });
  const driver = spawn('WebKitWebDriver', [`--port=${port}`], {
    stdio: 'ignore',
    env: { ...process.env, DISPLAY: display },
  });
  const base = `http://127.0.0.1:${port}`;
  const call = async (method, path, body) => {
    const r = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const v = await r.json();
    if (v.value && v.value.error) throw new Error(`WebDriver ${path}: ${v.value.error}: ${v.value.message}`);
    return v.value;
  };
  // The driver and the display take a moment to come up: asked again for 10 s.
  let session = null;
  let last = null;
  for (let i = 0; i < 100 && !session; i++) {
    try {
      session = await call('POST', '/session', {
        capabilities: {
          alwaysMatch: {
            browserName: 'MiniBrowser',
            'webkitgtk:browserOptions': {
              binary: process.env.MINIBROWSER || '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser',
              args: ['--automation'],
            },
          },
        },
      });
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (!session) {
    driver.kill('SIGKILL');
    xvfb.kill('SIGKILL');
    throw new Error(`WebKitWebDriver did not start a session: ${last}`);
  }
  const id = session.sessionId;
  const page = {
    on() {},
    goto: (url) => call('POST', `/session/${id}/url`, { url }),
    evaluate: async (fn) => {
      const json = await call('POST', `/session/${id}/execute/sync`, {
        script: `return JSON.stringify((${fn.toString()})())`,
        args: [],
      });
      return JSON.parse(json);
    },
    screenshot: async ({ path }) => writeFileSync(path, Buffer.from(await call('GET', `/session/${id}/screenshot`), 'base64')),
  };
  const browser = {
    close: async () => {
      await call('DELETE', `/session/${id}`).catch(() => {});
      driver.kill('SIGKILL');
      xvfb.kill('SIGKILL');
    },
  };
  return { browser, page };
}

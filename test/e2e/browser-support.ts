/**
 * Helpers for the browser tests: launching the system Chromium through playwright-core,
 * watching pages for console errors and CSP violations, and the few UI steps every scenario
 * repeats (sign up, log in, log out, add and switch platforms).
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const SCREENSHOTS = path.join(ROOT, 'docs', 'screenshots');

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The contract says other tabs follow within 2 s; the bound leaves room for a loaded CI machine. */
export const CROSS_TAB_MS = 4_000;
/** Anything else the page does on its own (a request, a re-render). */
export const UI_MS = 10_000;

export const BACKEND_LABELS = { cookie: 'Cookie', database: 'Database', redis: 'Redis' } as const;
export type Backend = keyof typeof BACKEND_LABELS;

export const UA = {
  firefoxWindows: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0',
  safariIphone: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
};

async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);
  // playwright-core gives every launch a fresh temporary --user-data-dir.
  return chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
}

export interface Person {
  name: string;
  email: string;
  password: string;
}

export function person(name: string, tag: string): Person {
  return { name, email: `${tag}@example.com`, password: `correct horse ${tag} staple` };
}

/**
 * How long closing a test's contexts may take. Now and then, on a loaded machine, Chromium
 * never answers the request to dispose of a context (CDP `Target.disposeBrowserContext`),
 * and the close waits for ever; past this bound the browser is replaced instead.
 */
const CLOSE_MS = 15_000;

/** Resolves true once `work` settles, or false after `ms` if it has not. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Owns one Chromium, opens contexts and pages on it, records every console error and CSP
 * violation they report, and closes them all in `closeAll` (an afterEach hook).
 */
export class BrowserSession {
  private browser: Browser | undefined;
  private readonly contexts: BrowserContext[] = [];
  private problems: string[] = [];

  constructor(private readonly baseURL: () => string) {}

  async launch(): Promise<void> {
    this.browser = await launchChromium();
  }

  async context(options: BrowserContextOptions = {}): Promise<BrowserContext> {
    if (!this.browser) throw new Error('BrowserSession.launch() first');
    const context = await this.browser.newContext({ baseURL: this.baseURL(), viewport: { width: 1280, height: 820 }, locale: 'en-US', timezoneId: 'UTC', ...options });
    this.contexts.push(context);
    // Runs before the page's own scripts and outside its CSP: reports every violation as a console error.
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`));
    });
    return context;
  }

  async page(context?: BrowserContext): Promise<Page> {
    const page = await (context ?? (await this.context())).newPage();
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const text = message.text();
      // Chromium logs every 4xx answer to fetch() as an error; the API's 401s and 400s are expected (logout detection, form errors).
      if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text) && new URL(message.location().url || page.url()).pathname.startsWith('/api/')) return;
      this.problems.push(`${page.url()}: ${text}`);
    });
    page.on('pageerror', (err) => this.problems.push(`${page.url()}: uncaught ${err.message}`));
    return page;
  }

  /** Console errors and CSP violations seen since the last call. */
  takeProblems(): string[] {
    const problems = this.problems;
    this.problems = [];
    return problems;
  }

  /**
   * Closes every context this test opened. A browser that does not close them within
   * CLOSE_MS is left to playwright (which kills it when the test process exits), and the
   * next test gets a fresh one, so one stuck Chromium fails no test.
   */
  async closeAll(): Promise<void> {
    const contexts = this.contexts.splice(0);
    if (await settlesWithin(Promise.all(contexts.map((c) => c.close())), CLOSE_MS)) return;
    console.warn(`      (Chromium did not close ${contexts.length} context(s) within ${CLOSE_MS} ms; starting a fresh browser)`);
    const stuck = this.browser;
    this.browser = undefined;
    void stuck?.close().catch(() => undefined);
    await this.launch();
  }

  /** Closes the contexts, then the browser, each bounded. */
  async close(): Promise<void> {
    await this.closeAll();
    await settlesWithin(this.browser?.close() ?? Promise.resolve(), CLOSE_MS);
    this.browser = undefined;
  }

}

export const onPath = (pathname: string) => (url: URL) => url.pathname === pathname;

export async function signup(page: Page, who: Person): Promise<void> {
  await page.goto('/signup');
  await page.getByLabel('Name').fill(who.name);
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password', { exact: true }).fill(who.password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(onPath('/'), { timeout: UI_MS });
}

export async function login(page: Page, who: Person, password = who.password): Promise<void> {
  await page.goto('/login');
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(onPath('/'), { timeout: UI_MS });
}

export async function logout(page: Page): Promise<void> {
  await page.getByRole('button', { name: 'Log out', exact: true }).first().click();
  await page.waitForURL(onPath('/login'), { timeout: UI_MS });
}

export async function addPlatform(page: Page, name: string, type: string): Promise<void> {
  const form = page.locator('form#add-platform');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Type').fill(type);
  await form.getByRole('button', { name: 'Add platform' }).click();
  await platformRow(page, name).waitFor({ timeout: UI_MS });
}

export function platformRow(page: Page, name: string) {
  return page.locator('#platform-list > li.platform').filter({ has: page.locator('.platform-name', { hasText: new RegExp(`^${escapeRegExp(name)}$`) }) });
}

export async function switchPlatform(page: Page, name: string): Promise<void> {
  await page.getByRole('button', { name: `Switch to ${name}` }).click();
  await waitForText(page, '[data-bind="platform"]', name, UI_MS);
}

/** Waits until the element's whole text is `text` (bounded). */
export async function waitForText(page: Page, selector: string, text: string, timeout: number): Promise<void> {
  await page.locator(selector, { hasText: new RegExp(`^\\s*${escapeRegExp(text)}\\s*$`) }).first().waitFor({ timeout });
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  // From the top, with nothing focused: a sticky header stays where it belongs in a full-page capture.
  await page.evaluate(() => {
    (document.activeElement as HTMLElement | null)?.blur();
    window.scrollTo(0, 0);
  });
  // Hide the text caret so repeated runs produce the same picture for the same state.
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true, caret: 'hide', animations: 'disabled' });
}

/** Removes what a test app left in the shared Redis under its own key prefix. */
export async function clearRedisPrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * A person who opens an address no route has (a mistyped link, `/favicon.ico` typed by hand)
 * gets a page, not the API's JSON. Told apart by `Sec-Fetch-Dest: document`, which browsers send
 * on a top-level navigation and no page script can (fetch() sends `empty`), as form-navigation.ts
 * does; programs, curl and API clients get the JSON `404` as before.
 * Only unknown paths outside `/api/` are answered so: an API route opened in a tab keeps its
 * JSON, which is what a developer opening it wants to read. The same for a page that cannot be
 * served for a moment (503: its session's backend down, a full disk): a page saying so, with
 * its Retry-After, not JSON.
 */
import type { Context, Next } from 'koa';
import type { Assets } from './assets.js';
import { notFoundPage, unavailablePage } from './views.js';

export function navigationErrors(assets: Assets) {
  const pages = new Map<number, string>();
  return function navigationErrors(ctx: Context, next: Next): Promise<void> {
    if (ctx.method !== 'GET' || ctx.get('Sec-Fetch-Dest') !== 'document' || ctx.path.startsWith('/api/')) return next();
    return next().then(() => {
      const code = (ctx.body as { error?: { code?: unknown } } | null)?.error?.code;
      const status = ctx.status;
      const make = status === 404 && code === 'not_found' ? notFoundPage : status === 503 && code === 'service_unavailable' ? unavailablePage : undefined;
      if (!make) return;
      ctx.set('Cache-Control', 'no-store');
      ctx.type = 'text/html; charset=utf-8';
      let page = pages.get(status);
      if (page === undefined) pages.set(status, (page = make(assets)));
      ctx.body = page;
      ctx.status = status;
    });
  };
}

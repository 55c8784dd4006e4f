/**
 * The pages' static files (src/http/pages/assets), read once at start-up and served from
 * memory with a content type, a strong ETag and a cache header.
 *
 * `tsc` does not copy .js/.css files into dist/, so the directory is always the source one:
 * found next to this module under tsx (src/http/pages/assets), or by walking up from
 * dist/src/http/pages to the repository root after a build.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Context } from 'koa';

const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

const SOURCE_DIR = path.join('src', 'http', 'pages', 'assets');

export function findAssetsDir(from: string = import.meta.dirname): string {
  const beside = path.join(from, 'assets');
  if (existsSync(path.join(beside, 'app.js'))) return beside;
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, SOURCE_DIR);
    if (existsSync(path.join(candidate, 'app.js'))) return candidate;
    if (path.dirname(dir) === dir) break;
  }
  throw new Error(`page assets not found: looked for ${SOURCE_DIR} above ${from}`);
}

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
  /** Short content hash, used as `?v=` in the pages so a new deploy is fetched at once. */
  version: string;
}

export class Assets {
  private readonly files = new Map<string, Asset>();

  constructor(dir: string = findAssetsDir()) {
    for (const name of readdirSync(dir)) {
      const type = CONTENT_TYPES[path.extname(name)];
      if (!type) continue;
      const body = readFileSync(path.join(dir, name));
      const hash = createHash('sha256').update(body).digest('base64url');
      this.files.set(name, { body, type, etag: `"${hash.slice(0, 27)}"`, version: hash.slice(0, 10) });
    }
  }

  /** `/assets/<name>?v=<content hash>` — the URL pages link to. */
  url(name: string): string {
    const asset = this.files.get(name);
    if (!asset) throw new Error(`unknown asset ${name}`);
    return `/assets/${name}?v=${asset.version}`;
  }

  /** Answers GET/HEAD /assets/:name; returns false when there is no such file. */
  serve(ctx: Context, name: string): boolean {
    const asset = this.files.get(name);
    if (!asset) return false;
    ctx.type = asset.type;
    // A versioned URL never changes content; an unversioned one is revalidated after a short while.
    ctx.set('Cache-Control', ctx.query.v === asset.version ? 'public, max-age=31536000, immutable' : 'public, max-age=300');
    ctx.etag = asset.etag;
    ctx.status = 200;
    if (ctx.fresh) {
      ctx.status = 304;
      return true;
    }
    ctx.body = asset.body;
    return true;
  }
}

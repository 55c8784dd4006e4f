/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and tells where the time went within a time window:
 * self time per function, per package or source file, and inclusive (on-stack) time per
 * function of the application — synchronous work only, which is what a saturated server spends.
 */
import { readFileSync } from 'node:fs';

interface Frame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: Frame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  name: string;
  ms: number;
  /** Share of the busy (non-idle) samples. */
  pct: number;
  /** µs of this per request served in the window, when the request count is known. */
  usPerRequest?: number;
}

export interface Analysis {
  windowMs: number;
  busyMs: number;
  requests?: number;
  samples: number;
  /** Share of samples in which the process was idle (waiting on I/O). */
  idlePct: number;
  selfByFunction: Row[];
  selfByArea: Row[];
  inclusiveByFunction: Row[];
}

/** node_modules/<pkg>, src/<file>, node:<module> or a V8 pseudo-frame. */
export function area(url: string, root: string): string {
  if (!url) return '(native/V8)';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith('node:')) return u.split('/')[0]!;
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 14).split('/');
    return `node_modules/${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  // The application's own files, wherever the checkout is (the repository, or --sb-root/--compare).
  const dist = u.lastIndexOf('/dist/');
  if (dist >= 0) return u.slice(dist + 6);
  if (u.startsWith(root)) u = u.slice(root.length + 1);
  return u;
}

/** A frame of the application (Switchboard or a bench peer), not of a library or of Node. */
function isApplication(url: string): boolean {
  return url !== '' && !url.startsWith('node:') && !url.includes('/node_modules/');
}

function label(f: Frame, root: string): string {
  const where = area(f.url, root);
  return `${f.functionName || '(anonymous)'} ${where}${f.url && !where.startsWith('node_modules') ? `:${f.lineNumber + 1}` : ''}`;
}

/** `from`/`to` are CLOCK_MONOTONIC µs (process.hrtime), the clock V8 stamps samples with on Linux. */
export function analyse(file: string, root: string, window?: { from: number; to: number; requests?: number }, top = 25): Analysis {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const areas = new Map<string, number>();
  const incl = new Map<string, number>();
  let t = p.startTime;
  let counted = 0;
  let idle = 0;
  let totalUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (window && (t < window.from || t > window.to)) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    const node = byId.get(p.samples[i]!)!;
    counted++;
    totalUs += dt;
    const name = node.callFrame.functionName;
    if (name === '(idle)') {
      idle += dt;
      continue;
    }
    const key = label(node.callFrame, root);
    self.set(key, (self.get(key) ?? 0) + dt);
    const a = name === '(garbage collector)' ? '(garbage collector)' : name === '(program)' ? '(program)' : area(node.callFrame.url, root);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    // Inclusive: each function of the application once per sample, however deep it recurses.
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (!isApplication(f.url)) continue;
      const k = label(f, root);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + dt);
    }
  }
  const busyUs = totalUs - idle;
  const requests = window?.requests;
  const rows = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, pct: (100 * us) / Math.max(1, busyUs), usPerRequest: requests ? us / requests : undefined }));
  return {
    windowMs: totalUs / 1000,
    busyMs: busyUs / 1000,
    requests,
    samples: counted,
    idlePct: (100 * idle) / Math.max(1, totalUs),
    selfByFunction: rows(self),
    selfByArea: rows(areas),
    inclusiveByFunction: rows(incl),
  };
}

export function analysisMarkdown(title: string, a: Analysis): string {
  const perReq = a.requests ? `; main thread busy ${((1000 * a.busyMs) / a.requests).toFixed(0)} µs per request` : '';
  const L = [`### ${title}`, '', `${a.samples.toLocaleString('en-US')} samples over ${(a.windowMs / 1000).toFixed(1)} s; main thread idle ${a.idlePct.toFixed(1)} %${perReq}. Shares are of the busy samples.`, ''];
  const us = (r: Row) => (r.usPerRequest === undefined ? '' : ` | ${r.usPerRequest.toFixed(1)}`);
  const table = (head: string, col: string, rows: Row[]) => {
    L.push(`| ${head} | ${col} %${a.requests ? ' | µs/request' : ''} |`, `| --- | ---:${a.requests ? ' | ---:' : ''} |`);
    for (const r of rows) L.push(`| \`${r.name}\` | ${r.pct.toFixed(1)}${us(r)} |`);
    L.push('');
  };
  table('area (package or file), self time', 'self', a.selfByArea);
  table('function, self time', 'self', a.selfByFunction);
  table('application function, inclusive (synchronous part)', 'on-stack', a.inclusiveByFunction);
  return L.join('\n');
}

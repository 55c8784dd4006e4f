import type { Socket } from 'node:net';

type WritableInternals = Socket & {
  _write(chunk: unknown, encoding: string, cb: () => void): void;
  _writev(chunks: unknown[], cb: () => void): void;
};

/**
 * How a socket's data reaches the kernel from now on: one entry per write(2) (1) or writev(2)
 * (its number of chunks), in order. Node's stream calls `_write` for one buffered chunk and
 * `_writev` for several.
 */
export function recordWrites(socket: Socket): number[] {
  const s = socket as WritableInternals;
  const writes: number[] = [];
  const write = s._write.bind(s);
  const writev = s._writev.bind(s);
  s._write = (chunk, encoding, cb) => {
    writes.push(1);
    write(chunk, encoding, cb);
  };
  s._writev = (chunks, cb) => {
    writes.push(chunks.length);
    writev(chunks, cb);
  };
  return writes;
}

/**
 * Text that may hold a URL with credentials (a configured REDIS_URL, DATABASE_URL or
 * UNLEASH_URL, or a client library's error message quoting one), fit for a log line or a
 * response: the password of every `scheme://user:password@` in it masked.
 */
export function withoutPassword(text: string): string {
  return text.replace(/(\/\/[^/:@\s]*):[^@/\s]*@/g, '$1:…@');
}

/**
 * Time as the SDK sees it. Injected so that tests can drive the refresh scheduler and the backoff
 * with a fake clock.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock. Its timers do not keep a Node process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(callback, ms) {
    const handle = globalThis.setTimeout(callback, ms) as unknown as { unref?: () => void };
    handle.unref?.();
    return handle;
  },
  clearTimeout(handle) {
    globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>);
  },
};

/** Waits `ms` on `clock`; resolves early when `wake` is called. */
export function sleep(clock: Clock, ms: number): { done: Promise<void>; wake: () => void } {
  let wake: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    const handle = clock.setTimeout(resolve, ms);
    wake = () => {
      clock.clearTimeout(handle);
      resolve();
    };
  });
  return { done, wake };
}

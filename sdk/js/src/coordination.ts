/**
 * How the tabs of one application agree on who refreshes. Web Locks (`navigator.locks`) where the
 * browser has them; a BroadcastChannel to tell the other tabs what happened. Both are injectable,
 * so that tests can run several SDK instances against one fake lock and channel.
 */

/** The part of the Web Locks API the SDK uses (`navigator.locks`). */
export interface LockManagerLike {
  request<T>(name: string, callback: (lock: unknown) => Promise<T>): Promise<T>;
}

/** The part of `BroadcastChannel` the SDK uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  close(): void;
}

/** Opens a channel by name; `new BroadcastChannel(name)` in a browser. */
export type ChannelFactory = (name: string) => ChannelLike;

/** The browser's lock manager, if it has one. */
export function defaultLocks(): LockManagerLike | undefined {
  const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
  return nav?.locks && typeof nav.locks.request === "function" ? nav.locks : undefined;
}

/**
 * The browser's BroadcastChannel. Only in a browser: in Node a session belongs to one process and
 * an open channel would keep it alive.
 */
export function defaultChannel(): ChannelFactory | undefined {
  const g = globalThis as { window?: unknown; BroadcastChannel?: new (name: string) => ChannelLike };
  if (g.window === undefined || typeof g.BroadcastChannel !== "function") return undefined;
  const Channel = g.BroadcastChannel;
  return (name) => new Channel(name);
}

/** A lock within this SDK instance: calls run one after another. */
export class LocalMutex {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn, fn);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

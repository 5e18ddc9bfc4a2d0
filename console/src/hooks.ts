/** The data hooks every view uses: one call, pages as you scroll, live streams, URL filters. */

import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { useLocation } from "preact-iso";

import { describeError } from "./api";

export interface Loaded<T> {
  data: T | undefined;
  error: string;
  loading: boolean;
  reload: () => void;
}

/** One async load, redone when deps change (the previous answer is ignored once stale). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let current = true;
    setLoading(true);
    load().then(
      (value) => {
        if (!current) return;
        setData(value);
        setError("");
        setLoading(false);
      },
      (reason) => {
        if (!current) return;
        setError(describeError(reason));
        setLoading(false);
      },
    );
    return () => {
      current = false;
    };
  }, [...deps, tick]);
  return { data, error, loading, reload: useCallback(() => setTick((t) => t + 1), []) };
}

export interface Pager<Item> {
  items: Item[];
  error: string;
  loading: boolean;
  /** True once the server answered an empty next_page_token. */
  done: boolean;
  loadMore: () => void;
  reset: () => void;
}

/**
 * A List RPC read page by page: the first page at once, the next when loadMore() is called (the
 * ScrollMore component calls it as its sentinel scrolls into view). Filters go in deps.
 */
export function usePages<Item>(
  fetchPage: (pageToken: string) => Promise<{ items: Item[]; nextPageToken: string }>,
  deps: unknown[],
): Pager<Item> {
  const [items, setItems] = useState<Item[]>([]);
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(false);
  const [done, setDone] = useState(false);
  const [generation, setGeneration] = useState(0);
  // replace: the next page answered is a first page, which replaces the items shown (kept
  // until then, so a refresh or a new filter does not blank the list).
  const state = useRef({ token: "", busy: false, generation: 0, done: false, replace: true });

  const loadMore = useCallback(() => {
    const s = state.current;
    if (s.busy || s.done) return;
    s.busy = true;
    const mine = s.generation;
    setLoading(true);
    fetchPage(s.token).then(
      (page) => {
        if (state.current.generation !== mine) return;
        s.busy = false;
        s.token = page.nextPageToken;
        s.done = !page.nextPageToken;
        const replace = s.replace;
        s.replace = false;
        setItems((previous) => (replace ? page.items : [...previous, ...page.items]));
        setDone(s.done);
        setError("");
        setLoading(false);
      },
      (reason) => {
        if (state.current.generation !== mine) return;
        s.busy = false;
        setError(describeError(reason));
        setLoading(false);
      },
    );
  }, [...deps, generation]);

  useEffect(() => {
    state.current = {
      token: "",
      busy: false,
      generation: state.current.generation + 1,
      done: false,
      replace: true,
    };
    setDone(false);
    setError("");
    loadMore();
  }, [loadMore]);

  const reset = useCallback(() => setGeneration((g) => g + 1), []);
  return { items, error, loading, done, loadMore, reset };
}

export interface Live {
  /** True while the stream is open. */
  connected: boolean;
  error: string;
}

/**
 * A server stream kept open while the view is shown: each message goes to onMessage; after an
 * error or the server closing it (e.g. a restart) it is opened again after a pause, by start()
 * with the latest state (a resume point). Pass enabled=false to hold it.
 */
export function useStream<T>(
  start: (signal: AbortSignal) => AsyncIterable<T>,
  onMessage: (message: T) => void,
  deps: unknown[],
  options: { enabled?: boolean; reopen?: boolean } = {},
): Live {
  const { enabled = true, reopen = true } = options;
  const [connected, setConnected] = useState(false);
  const [error, setError] = useState("");
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const starter = useRef(start);
  starter.current = start;
  useEffect(() => {
    if (!enabled) return;
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        setConnected(true);
        for await (const message of starter.current(controller.signal)) {
          setError("");
          handler.current(message);
        }
        setConnected(false);
        if (!reopen) return;
      } catch (reason) {
        setConnected(false);
        if (controller.signal.aborted) return;
        setError(describeError(reason));
      }
      if (!controller.signal.aborted) timer = setTimeout(run, 2000);
    };
    void run();
    return () => {
      controller.abort();
      if (timer) clearTimeout(timer);
      setConnected(false);
    };
  }, [...deps, enabled, reopen]);
  return { connected, error };
}

/** Calls fn every intervalMs while the view is shown (for lists with no watch RPC). */
export function useInterval(fn: () => void, intervalMs: number): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    const timer = setInterval(() => saved.current(), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
}

/** The URL's query as filters: read them, and replace them (a new shareable URL). */
export function useQueryFilters(): [Record<string, string>, (next: Record<string, string>) => void] {
  const location = useLocation();
  const setFilters = useCallback(
    (next: Record<string, string>) => {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(next)) if (value) params.set(key, value);
      const query = params.toString();
      location.route(`${location.path}${query ? `?${query}` : ""}`);
    },
    [location],
  );
  return [location.query, setFilters];
}

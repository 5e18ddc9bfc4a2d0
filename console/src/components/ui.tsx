/** Small shared pieces: errors, empty states, badges, JSON, the scroll sentinel. */

import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

import type { Pager } from "../hooks";

export function ErrorBox({ error }: { error: string }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      {error}
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

export function Badge({ children, tone = "" }: { children: ComponentChildren; tone?: string }) {
  return <span class={`badge ${tone}`}>{children}</span>;
}

export function LiveDot({ connected }: { connected: boolean }) {
  return (
    <span class={`live ${connected ? "on" : "off"}`} data-testid="live">
      {connected ? "live" : "not live"}
    </span>
  );
}

export function Json({ value }: { value: unknown }) {
  if (value === undefined || value === null) return null;
  if (typeof value === "object" && Object.keys(value as object).length === 0) return null;
  return <pre class="json">{JSON.stringify(value, null, 2)}</pre>;
}

/**
 * The end of a paged list: asks for the next page when it scrolls into view (and offers a
 * button for when it does not, e.g. on tall screens).
 */
export function ScrollMore<T>({ pager }: { pager: Pager<T> }) {
  const sentinel = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = sentinel.current;
    if (!element || pager.done) return;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) pager.loadMore();
    });
    observer.observe(element);
    return () => observer.disconnect();
  }, [pager.done, pager.loadMore, pager.items.length]);
  return (
    <div class="more" ref={sentinel}>
      <ErrorBox error={pager.error} />
      {pager.loading ? (
        <span class="muted">Loading…</span>
      ) : pager.done ? (
        pager.items.length === 0 ? (
          <span class="muted">Nothing matches.</span>
        ) : (
          <span class="muted">End of list.</span>
        )
      ) : (
        <button type="button" class="link" onClick={pager.loadMore}>
          Load more
        </button>
      )}
    </div>
  );
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card">
      <header class="card-head">
        <h2>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}

/** How values read on screen: times, durations, money, tokens, enum names. */

import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { common } from "@agentplane/sdk";

export function time(ts: Timestamp | undefined): string {
  if (!ts) return "";
  const date = timestampDate(ts);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function millis(ts: Timestamp | undefined): number {
  return ts ? Number(ts.seconds) * 1000 + ts.nanos / 1e6 : 0;
}

export function durationMs(d: Duration | undefined): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

export function ms(value: number): string {
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${value.toFixed(value < 10 ? 1 : 0)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

/** Cost in micro-units of its currency (Usage.cost_micros), e.g. "$0.012300". */
export function cost(usage: common.Usage | undefined): string {
  if (!usage) return "";
  const amount = Number(usage.costMicros) / 1e6;
  const currency = usage.costCurrency || "USD";
  const symbol = currency === "USD" ? "$" : `${currency} `;
  return `${symbol}${amount.toFixed(6)}`;
}

export function tokens(usage: common.Usage | undefined): string {
  if (!usage) return "";
  return `${usage.inputTokens} in / ${usage.outputTokens} out`;
}

/** "THUMBS_DOWN" -> "thumbs down": the generated enums carry their value names. */
export function enumName(values: Record<number, string>, value: number): string {
  const name = values[value];
  return name ? name.toLowerCase().replace(/_/g, " ") : String(value);
}

/** Value of a datetime-local input -> Timestamp-ready Date, or undefined when empty. */
export function parseLocalTime(value: string | undefined): Date | undefined {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** A google.protobuf.Duration of the given milliseconds. */
export function durationFromMs(value: number): Duration {
  const seconds = Math.floor(value / 1000);
  return create(DurationSchema, { seconds: BigInt(seconds), nanos: Math.round((value - seconds * 1000) * 1e6) });
}

/**
 * The TypeScript runner of the shared conformance scenarios in tests/conformance/ (the format
 * is in tests/conformance/README.md; tests/test_conformance.py is the Python runner, and the two
 * must read, call and match alike).
 */

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

import { parse } from "yaml";
import {
  fromJson,
  toJson,
  type DescMessage,
  type DescMethod,
  type JsonValue,
} from "@bufbuild/protobuf";

import { RpcError, SERVICES, type AgentplaneClient } from "@agentplane/sdk";

export interface Step {
  name?: string;
  call: string;
  request?: JsonValue;
  as?: string;
  project?: string;
  mode?: "unary" | "pages" | "stream";
  take?: number;
  timeoutMs?: number;
  eventually?: number;
  expect?: { response?: unknown; items?: unknown; responses?: unknown; error?: unknown };
  capture?: Record<string, string>;
}

export interface Scenario {
  name: string;
  description?: string;
  requires?: string[];
  steps: Step[];
  file: string;
}

export type Outcome = { status: "passed" } | { status: "skipped"; reason: string };

export function loadScenarios(dir: string): Scenario[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith(".yaml"))
    .sort()
    .map((name) => {
      // YAML 1.2 core schema; the Python runner reads it so too (conformance.test.ts checks).
      const data = parse(readFileSync(join(dir, name), "utf8"), {
        version: "1.2",
        schema: "core",
      }) as Scenario;
      return { ...data, file: name };
    });
}

// --- matching (keep in step with tests/test_conformance.py) -----------------------------------

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isOperator(value: unknown): value is Record<string, unknown> {
  return (
    isPlainObject(value) &&
    Object.keys(value).length > 0 &&
    Object.keys(value).every((k) => k.startsWith("$"))
  );
}

function isDefault(value: unknown): boolean {
  if (value === undefined || value === null || value === "" || value === 0 || value === false)
    return true;
  if (Array.isArray(value)) return value.length === 0;
  if (isPlainObject(value)) return Object.keys(value).length === 0;
  return false;
}

const NUMBER = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

function numeric(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string" && NUMBER.test(value)) return Number(value);
  return undefined;
}

function scalarEqual(expected: unknown, actual: unknown): boolean {
  if (actual === undefined || actual === null) return isDefault(expected);
  if (expected === actual) return true;
  if (typeof expected !== typeof actual) {
    const e = numeric(expected);
    const a = numeric(actual);
    return e !== undefined && a !== undefined && e === a;
  }
  return false;
}

function show(value: unknown): string {
  return value === undefined ? "(absent)" : JSON.stringify(value);
}

function lengthOf(value: unknown): number | undefined {
  if (value === undefined || value === null) return 0;
  if (Array.isArray(value) || typeof value === "string") return value.length;
  if (isPlainObject(value)) return Object.keys(value).length;
  return undefined;
}

/** The mismatches between an expectation and an actual JSON value (empty: it matches). */
export function match(expected: unknown, actual: unknown, path = "$"): string[] {
  if (isOperator(expected)) {
    const errors: string[] = [];
    for (const [op, arg] of Object.entries(expected)) {
      switch (op) {
        case "$present":
          if (isDefault(actual) === Boolean(arg)) {
            errors.push(`${path}: expected ${arg ? "a value" : "no value"}, got ${show(actual)}`);
          }
          break;
        case "$len": {
          const length = lengthOf(actual);
          if (length === undefined)
            errors.push(`${path}: expected something with a length, got ${show(actual)}`);
          else errors.push(...match(arg, length, `${path}.length`));
          break;
        }
        case "$regex":
          if (typeof actual !== "string" || !new RegExp(String(arg)).test(actual)) {
            errors.push(`${path}: expected a match of /${String(arg)}/, got ${show(actual)}`);
          }
          break;
        case "$contains":
          if (typeof arg === "string") {
            if (typeof actual !== "string" || !actual.includes(arg)) {
              errors.push(
                `${path}: expected a string containing ${show(arg)}, got ${show(actual)}`,
              );
            }
          } else {
            const items = Array.isArray(actual) ? actual : actual === undefined ? [] : undefined;
            if (items === undefined) {
              errors.push(`${path}: expected an array, got ${show(actual)}`);
              break;
            }
            for (const [i, wanted] of (arg as unknown[]).entries()) {
              if (!items.some((item) => match(wanted, item).length === 0)) {
                errors.push(
                  `${path}: no element matches $contains[${i}] ${show(wanted)} in ${show(actual)}`,
                );
              }
            }
          }
          break;
        case "$ne":
          if (match(arg, actual).length === 0)
            errors.push(`${path}: expected anything but ${show(arg)}`);
          break;
        case "$gte":
        case "$lte": {
          const value = numeric(actual);
          const bound = numeric(arg);
          const ok =
            value !== undefined &&
            bound !== undefined &&
            (op === "$gte" ? value >= bound : value <= bound);
          if (!ok)
            errors.push(
              `${path}: expected ${op === "$gte" ? ">=" : "<="} ${show(arg)}, got ${show(actual)}`,
            );
          break;
        }
        default:
          errors.push(`${path}: unknown matcher ${op}`);
      }
    }
    return errors;
  }
  if (Array.isArray(expected)) {
    const items = actual === undefined || actual === null ? [] : actual;
    if (!Array.isArray(items)) return [`${path}: expected an array, got ${show(actual)}`];
    if (items.length !== expected.length) {
      return [
        `${path}: expected ${expected.length} element(s), got ${items.length}: ${show(actual)}`,
      ];
    }
    return expected.flatMap((e, i) => match(e, items[i], `${path}[${i}]`));
  }
  if (isPlainObject(expected)) {
    const object = actual === undefined || actual === null ? {} : actual;
    if (!isPlainObject(object)) return [`${path}: expected an object, got ${show(actual)}`];
    return Object.entries(expected).flatMap(([k, e]) => match(e, object[k], `${path}.${k}`));
  }
  return scalarEqual(expected, actual)
    ? []
    : [`${path}: expected ${show(expected)}, got ${show(actual)}`];
}

// --- variables -----------------------------------------------------------------------------------

const WHOLE = /^\$\{(\w+)\}$/;
const PART = /\$\{(\w+)\}/g;

export function interpolate(value: unknown, vars: Record<string, unknown>): unknown {
  if (typeof value === "string") {
    const whole = WHOLE.exec(value);
    if (whole) {
      if (!(whole[1]! in vars)) throw new Error(`unknown variable \${${whole[1]}}`);
      return vars[whole[1]!];
    }
    return value.replace(PART, (_, name: string) => {
      if (!(name in vars)) throw new Error(`unknown variable \${${name}}`);
      const v = vars[name];
      return typeof v === "string" ? v : JSON.stringify(v);
    });
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, vars));
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, vars)]));
  }
  return value;
}

export function lookup(root: unknown, path: string): unknown {
  let value: unknown = root;
  for (const part of path.split(".")) {
    if (Array.isArray(value) && /^\d+$/.test(part)) value = value[Number(part)];
    else if (isPlainObject(value)) value = value[part];
    else value = undefined;
    if (value === undefined) throw new Error(`capture path ${path} not found in ${show(root)}`);
  }
  return value;
}

// --- running -------------------------------------------------------------------------------------

function resolveCall(call: string): { key: keyof typeof SERVICES; method: DescMethod } {
  const [serviceName, methodName] = call.split(".");
  for (const [key, service] of Object.entries(SERVICES)) {
    if (service.name !== serviceName) continue;
    const method = service.methods.find((m) => m.name === methodName);
    if (method) return { key: key as keyof typeof SERVICES, method };
  }
  throw new Error(`unknown call ${call}: use Service.Method, e.g. SessionService.CreateSession`);
}

function itemSchema(method: DescMethod): DescMessage {
  const field = method.output.fields.find((f) => f.fieldKind === "list");
  if (field?.fieldKind !== "list" || field.listKind !== "message") {
    throw new Error(`${method.name} is not a List method`);
  }
  return field.message;
}

function errorJson(error: RpcError): Record<string, unknown> {
  return {
    code: error.codeName,
    reason: error.reason,
    domain: error.domain,
    message: error.rawMessage,
    metadata: error.metadata,
    fieldViolations: error.fieldViolations.map((v) => ({
      field: v.field,
      description: v.description,
      reason: v.reason,
    })),
    requestId: error.requestId,
  };
}

type Result = { ok: true; value: unknown } | { ok: false; error: RpcError };

async function invoke(client: AgentplaneClient, step: Step, request: JsonValue): Promise<Result> {
  const { key, method } = resolveCall(step.call);
  const message = fromJson(method.input, request);
  const service = client[key] as unknown as Record<string, (...args: unknown[]) => unknown>;
  const options = { timeoutMs: step.timeoutMs ?? 10_000 };
  const mode = step.mode ?? "unary";
  try {
    if (mode === "pages") {
      const iterator = service[method.localName]!(message, options) as {
        toArray(): Promise<unknown[]>;
      };
      const schema = itemSchema(method);
      const items = await iterator.toArray();
      return { ok: true, value: { items: items.map((item) => toJson(schema, item as never)) } };
    }
    if (mode === "stream") {
      const responses: JsonValue[] = [];
      const take = step.take ?? 1;
      for await (const response of service[method.localName]!(
        message,
        options,
      ) as AsyncIterable<never>) {
        responses.push(toJson(method.output, response));
        if (responses.length >= take) break;
      }
      return { ok: true, value: { responses } };
    }
    const isPaged = `${method.localName}Page` in service;
    const call = service[isPaged ? `${method.localName}Page` : method.localName]!;
    const response = await (call(message, options) as Promise<never>);
    return { ok: true, value: toJson(method.output, response) };
  } catch (error) {
    if (error instanceof RpcError) return { ok: false, error };
    throw error;
  }
}

function check(step: Step, result: Result, vars: Record<string, unknown>): string[] {
  const expect = (interpolate(step.expect ?? {}, vars) ?? {}) as NonNullable<Step["expect"]>;
  if (!result.ok) {
    if (expect.error === undefined) return [`unexpected error ${result.error.message}`];
    return match(expect.error, errorJson(result.error), "error");
  }
  if (expect.error !== undefined)
    return [`expected error ${show(expect.error)}, got ${show(result.value)}`];
  const mode = step.mode ?? "unary";
  const errors: string[] = [];
  if (mode === "unary" && expect.response !== undefined)
    errors.push(...match(expect.response, result.value, "response"));
  if (mode === "pages" && expect.items !== undefined) {
    errors.push(...match(expect.items, (result.value as { items: unknown }).items, "items"));
  }
  if (mode === "stream" && expect.responses !== undefined) {
    errors.push(
      ...match(expect.responses, (result.value as { responses: unknown }).responses, "responses"),
    );
  }
  return errors;
}

/** Run one scenario with `client` (its admin key in `adminKey`). Throws on a mismatch. */
export async function runScenario(
  scenario: Scenario,
  client: AgentplaneClient,
  adminKey: string,
): Promise<Outcome> {
  const vars: Record<string, unknown> = { uid: randomBytes(4).toString("hex"), adminKey };
  const requires = new Set(scenario.requires ?? []);
  for (const [index, step] of scenario.steps.entries()) {
    const label = `${scenario.name} step ${index + 1}${step.name ? ` (${step.name})` : ""}: ${step.call}`;
    const request = interpolate(step.request ?? {}, vars) as JsonValue;
    let stepClient = client;
    if (step.as !== undefined || step.project !== undefined) {
      stepClient = client.withOptions({
        apiKey: step.as === undefined ? undefined : String(interpolate(step.as, vars)),
        project: step.project === undefined ? undefined : String(interpolate(step.project, vars)),
      });
    }
    const deadline = Date.now() + (step.eventually ?? 0);
    let result: Result;
    let errors: string[];
    for (;;) {
      result = await invoke(stepClient, step, request);
      const serviceName = step.call.split(".")[0]!;
      const expectsUnimplemented =
        (step.expect?.error as { code?: string } | undefined)?.code === "UNIMPLEMENTED";
      if (!result.ok && result.error.codeName === "UNIMPLEMENTED" && !expectsUnimplemented) {
        if (requires.has(serviceName)) {
          return {
            status: "skipped",
            reason: `${serviceName} answers UNIMPLEMENTED (not served yet)`,
          };
        }
        throw new Error(
          `${label}: UNIMPLEMENTED from ${serviceName}, which the scenario does not list in requires`,
        );
      }
      errors = check(step, result, vars);
      if (errors.length === 0 || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (errors.length > 0) {
      throw new Error(`${label}\n  ${errors.join("\n  ")}`);
    }
    if (step.capture && result.ok) {
      for (const [name, path] of Object.entries(step.capture))
        vars[name] = lookup(result.value, path);
    }
  }
  return { status: "passed" };
}

/**
 * Typed errors: one class per gRPC status family, with the server's rich details parsed.
 *
 * Agentplane sends every error as a google.rpc.Status in the grpc-status-details-bin trailer: an
 * ErrorInfo whose reason is a name from agentplane.common.v1.ErrorReason, plus BadRequest field
 * violations, RetryInfo and RequestInfo where they apply. connect-es keeps the packed details on
 * ConnectError; we decode them with the google.rpc descriptors (generated into src/gen/google/rpc
 * by protoc-gen-es, see buf.gen.google-rpc.yaml). The classes and fields mirror the Python SDK's
 * (agentplane._errors), so both SDKs report the same failure the same way.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { type Message } from "@bufbuild/protobuf";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RequestInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type RequestInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "./gen/agentplane/common/v1/error_reason_pb.js";

/** The ErrorInfo domain of every Agentplane error. */
export const ERROR_DOMAIN = "agentplane.dev";

/** Canonical gRPC status code names, as grpc and the Python SDK spell them. */
export type StatusCodeName =
  | "OK"
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const CODE_NAMES: readonly StatusCodeName[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** The canonical name of a status code: `codeName(Code.NotFound) === "NOT_FOUND"`. */
export function codeName(code: Code | number): StatusCodeName {
  return CODE_NAMES[code] ?? "UNKNOWN";
}

/** The base of every error the SDK throws on purpose. */
export class AgentplaneError extends Error {
  override name = "AgentplaneError";
}

/** One bad field of a request (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  field: string;
  description: string;
  reason: string;
}

export interface RpcErrorInit {
  code: Code;
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  retryDelayMs?: number;
  requestId?: string;
  details?: Message[];
  method?: string;
  cause?: unknown;
}

/**
 * A call failed with a gRPC status. Subclasses name the status family (NotFoundError, ...).
 *
 * Switch on `reason` (an ErrorReason name such as "ERROR_REASON_SESSION_NOT_FOUND") or on the
 * class, not on the message. `requestId` finds the server's log line for the call.
 */
export class RpcError extends AgentplaneError {
  override name = "RpcError";
  /** The status code (connect-es `Code`, numerically equal to the gRPC code). */
  readonly code: Code;
  /** The ErrorInfo reason: an agentplane.common.v1.ErrorReason name, "" when none was sent. */
  readonly reason: string;
  readonly domain: string;
  /** ErrorInfo metadata, e.g. {session_id: "..."}. */
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, when the server asked to retry after a delay. */
  readonly retryDelayMs: number | undefined;
  /** RequestInfo.request_id: the id of the server's log line for the call. */
  readonly requestId: string;
  /** Every decoded detail message (ErrorInfo, BadRequest, RetryInfo, RequestInfo). */
  readonly details: Message[];
  /** The RPC that failed, e.g. "agentplane.session.v1.SessionService/GetSession". */
  readonly method: string;
  /** The status message without decoration. */
  readonly rawMessage: string;

  constructor(message: string, init: RpcErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.rawMessage = message;
    this.code = init.code;
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.retryDelayMs = init.retryDelayMs;
    this.requestId = init.requestId ?? "";
    this.details = init.details ?? [];
    this.method = init.method ?? "";
    this.message = this.describe();
  }

  /** "NOT_FOUND", "INVALID_ARGUMENT", ... */
  get codeName(): StatusCodeName {
    return codeName(this.code);
  }

  /** `reason` as an ErrorReason value (UNSPECIFIED when unknown). */
  get errorReason(): ErrorReason {
    const value = (ErrorReason as unknown as Record<string, number>)[
      this.reason.replace(/^ERROR_REASON_/, "")
    ];
    return value === undefined ? ErrorReason.UNSPECIFIED : (value as ErrorReason);
  }

  /** Field violations keyed by field path. */
  get violationsByField(): Record<string, string> {
    return Object.fromEntries(this.fieldViolations.map((v) => [v.field, v.description]));
  }

  private describe(): string {
    const parts = [`${this.codeName}: ${this.rawMessage}`];
    if (this.reason) parts.push(`reason=${this.reason}`);
    if (this.fieldViolations.length > 0) {
      parts.push(
        "fields=" + this.fieldViolations.map((v) => `${v.field} (${v.description})`).join(", "),
      );
    }
    if (this.requestId) parts.push(`request_id=${this.requestId}`);
    if (this.method) parts.push(`method=${this.method}`);
    return parts.join(" ");
  }
}

export class CancelledError extends RpcError {
  override name = "CancelledError";
}
export class UnknownError extends RpcError {
  override name = "UnknownError";
}
export class InvalidArgumentError extends RpcError {
  override name = "InvalidArgumentError";
}
export class DeadlineExceededError extends RpcError {
  override name = "DeadlineExceededError";
}
export class NotFoundError extends RpcError {
  override name = "NotFoundError";
}
export class AlreadyExistsError extends RpcError {
  override name = "AlreadyExistsError";
}
export class PermissionDeniedError extends RpcError {
  override name = "PermissionDeniedError";
}
export class ResourceExhaustedError extends RpcError {
  override name = "ResourceExhaustedError";
}
export class FailedPreconditionError extends RpcError {
  override name = "FailedPreconditionError";
}
export class AbortedError extends RpcError {
  override name = "AbortedError";
}
export class OutOfRangeError extends RpcError {
  override name = "OutOfRangeError";
}
export class UnimplementedError extends RpcError {
  override name = "UnimplementedError";
}
export class InternalError extends RpcError {
  override name = "InternalError";
}
export class UnavailableError extends RpcError {
  override name = "UnavailableError";
}
export class DataLossError extends RpcError {
  override name = "DataLossError";
}
export class UnauthenticatedError extends RpcError {
  override name = "UnauthenticatedError";
}

const ERROR_CLASSES: Partial<Record<Code, new (message: string, init: RpcErrorInit) => RpcError>> =
  {
    [Code.Canceled]: CancelledError,
    [Code.Unknown]: UnknownError,
    [Code.InvalidArgument]: InvalidArgumentError,
    [Code.DeadlineExceeded]: DeadlineExceededError,
    [Code.NotFound]: NotFoundError,
    [Code.AlreadyExists]: AlreadyExistsError,
    [Code.PermissionDenied]: PermissionDeniedError,
    [Code.ResourceExhausted]: ResourceExhaustedError,
    [Code.FailedPrecondition]: FailedPreconditionError,
    [Code.Aborted]: AbortedError,
    [Code.OutOfRange]: OutOfRangeError,
    [Code.Unimplemented]: UnimplementedError,
    [Code.Internal]: InternalError,
    [Code.Unavailable]: UnavailableError,
    [Code.DataLoss]: DataLossError,
    [Code.Unauthenticated]: UnauthenticatedError,
  };

function durationMs(retry: RetryInfo): number | undefined {
  const delay = retry.retryDelay;
  if (delay === undefined) return undefined;
  return Number(delay.seconds) * 1000 + delay.nanos / 1e6;
}

/**
 * Whether the server refused the call's HTTP/2 stream (RST_STREAM REFUSED_STREAM: nothing was
 * processed, as when a server that is stopping sees a call arrive). connect-node reports it as
 * INTERNAL when Node's stream "error" event comes before "close"; gRPC's HTTP/2 mapping makes
 * it UNAVAILABLE, which the retry policy may repeat.
 */
function refusedStream(reason: unknown): boolean {
  let cause = reason;
  for (let depth = 0; cause instanceof Error && depth < 8; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (code === "ERR_HTTP2_STREAM_ERROR" && cause.message.includes("REFUSED_STREAM")) return true;
    cause = cause.cause;
  }
  return false;
}

/** The typed error for anything a connect-es call threw (ConnectError or not). */
export function fromConnectError(reason: unknown, method = ""): RpcError {
  if (reason instanceof RpcError) return reason;
  const error = ConnectError.from(reason);
  const code =
    error.code === Code.Internal && refusedStream(reason) ? Code.Unavailable : error.code;
  const init: RpcErrorInit = { code, method, cause: reason };
  const details: Message[] = [];
  const info: ErrorInfo | undefined = error.findDetails(ErrorInfoSchema)[0];
  if (info !== undefined) {
    init.reason = info.reason;
    init.domain = info.domain;
    init.metadata = { ...info.metadata };
    details.push(info);
  }
  const bad: BadRequest | undefined = error.findDetails(BadRequestSchema)[0];
  if (bad !== undefined) {
    init.fieldViolations = bad.fieldViolations.map((v) => ({
      field: v.field,
      description: v.description,
      reason: v.reason,
    }));
    details.push(bad);
  }
  const retry: RetryInfo | undefined = error.findDetails(RetryInfoSchema)[0];
  if (retry !== undefined) {
    init.retryDelayMs = durationMs(retry);
    details.push(retry);
  }
  const request: RequestInfo | undefined = error.findDetails(RequestInfoSchema)[0];
  if (request !== undefined) {
    init.requestId = request.requestId;
    details.push(request);
  }
  init.details = details;
  const ErrorClass = ERROR_CLASSES[code] ?? RpcError;
  return new ErrorClass(error.rawMessage, init);
}

// --- governance -------------------------------------------------------------------------------

/** A governed action did not go ahead. */
export class GovernanceError extends AgentplaneError {
  override name = "GovernanceError";
  readonly action: string;
  readonly decision: unknown;

  constructor(message: string, options: { action?: string; decision?: unknown; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.action = options.action ?? "";
    this.decision = options.decision;
  }
}

/** CheckPermission (or a cached decision) answered DENY. */
export class ActionDenied extends GovernanceError {
  override name = "ActionDenied";
}

/** The action needs a reviewer's approval: wait for `approvalId` and check again. */
export class ApprovalRequired extends GovernanceError {
  override name = "ApprovalRequired";
  get approvalId(): string {
    return (this.decision as { approvalId?: string } | undefined)?.approvalId ?? "";
  }
}

/** ValidateOutput answered REJECT (or FLAG_FOR_REVIEW while flagged outputs are refused). */
export class OutputRejected extends GovernanceError {
  override name = "OutputRejected";
  readonly validation: unknown;
  constructor(message: string, options: { action?: string; validation?: unknown }) {
    super(message, { action: options.action });
    this.validation = options.validation;
  }
}

/**
 * Agentplane could not be asked in time (UNAVAILABLE or DEADLINE_EXCEEDED), so the action
 * failed closed. `cause` is the underlying RpcError. Pass `failOpen: true` to allow actions in
 * that case instead.
 */
export class GovernanceUnavailable extends GovernanceError {
  override name = "GovernanceUnavailable";
}

// The generated messages, enums and service descriptor of agentplane.common.v1.
export * from "../gen/agentplane/common/v1/error_reason_pb.js";
export * from "../gen/agentplane/common/v1/time_range_pb.js";
export * from "../gen/agentplane/common/v1/usage_pb.js";

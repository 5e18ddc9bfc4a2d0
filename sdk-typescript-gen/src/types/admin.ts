// The generated messages, enums and service descriptor of agentplane.admin.v1.
export * from "../gen/agentplane/admin/v1/admin_service_pb.js";
export * from "../gen/agentplane/admin/v1/api_key_pb.js";
export * from "../gen/agentplane/admin/v1/audit_event_pb.js";
export * from "../gen/agentplane/admin/v1/project_pb.js";

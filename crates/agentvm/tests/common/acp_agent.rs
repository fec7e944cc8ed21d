//! What the scripted ACP test agent (`tests/fixtures/acp-test-agent.mjs`) does, for the tests
//! that drive it (outside VMs with a hand-made client, inside VMs through `AgentConnection`).
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

/// The messages of a "hello" turn with the permission allowed, in order: `update:<kind>` for a
/// `session/update`, the method for a request to the client.
pub const HELLO_TRACE: [&str; 14] = [
    "update:agent_message_chunk",
    "update:agent_message_chunk",
    "update:agent_message_chunk",
    "update:plan",
    "update:tool_call",
    "session/request_permission",
    "update:tool_call_update",
    "fs/write_text_file",
    "terminal/create",
    "terminal/wait_for_exit",
    "terminal/output",
    "terminal/release",
    "update:tool_call_update",
    "update:agent_message_chunk",
];

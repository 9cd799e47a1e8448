// Package sdkclient builds the part of a Databricks workspace client that
// this module calls, and nothing more.
//
// databricks.NewWorkspaceClient constructs every service client of the SDK
// (over a hundred), which links all of them into every program that calls
// it and costs a few hundred allocations per client. A Client here holds the
// SDK's own config (unified authentication unchanged: PAT, OAuth M2M, U2M,
// profiles, cloud identities), its HTTP client, and the three services the
// library uses: postgres (autoscaling credentials and endpoints), database
// (provisioned instances) and iam (Me).
//
// Clients this package builds talk to the workspace through a transport
// that can be bound to an operation's context (Client.Bind): requests the
// SDK makes with context.Background() — the host-metadata probe, OAuth
// discovery and token exchange — then end when the operation does. Network
// failures are reported as *NetworkError values that the SDK's retry loops
// do not match, so the SDK gives up at once and the caller's own retry
// policy (the token cache's backoff) decides; see DESIGN.md, SDK traps.
package sdkclient

// Package doctor walks every stage of a Lakebase connection — settings,
// workspace, workspace credentials, identity, host look-up, database
// credential, DNS, TCP (with wake-up), TLS, login, a query — timing each
// and stopping at the first failure with its fix. It is `lakebase doctor`.
//
// The settings are resolved exactly as connector.New resolves them
// (Config.Validate, then connector.New itself for the credential and the
// login); the earlier network stages repeat the connector's look-ups one
// at a time so that a failure names the stage it belongs to.
package doctor

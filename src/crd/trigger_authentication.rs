//! `keda.sh/v1alpha1` TriggerAuthentication and ClusterTriggerAuthentication (one shared spec).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a trigger's authentication parameters come from.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    plural = "triggerauthentications",
    shortname = "ta",
    shortname = "triggerauth",
    category = "keda",
    namespaced,
    status = "TriggerAuthenticationStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Parameters from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<AuthSecretTargetRef>,
    /// Parameters from ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_map_target_ref: Vec<AuthConfigMapTargetRef>,
    /// Parameters from the scale target's container environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<AuthEnvironment>,
    /// Identity of the workload or of ebb (aws, azure-workload, gcp, none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// ClusterTriggerAuthentication only: a JSON file of parameters under the auth root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// External secret stores, kept as written; ebb reports them as not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub hashi_corp_vault: Option<serde_json::Value>,
    /// See `hashi_corp_vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub azure_key_vault: Option<serde_json::Value>,
    /// See `hashi_corp_vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub gcp_secret_manager: Option<serde_json::Value>,
    /// See `hashi_corp_vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub aws_secret_manager: Option<serde_json::Value>,
    /// See `hashi_corp_vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_list")]
    pub bound_service_account_token: Option<serde_json::Value>,
    /// See `hashi_corp_vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub oauth2: Option<serde_json::Value>,
}

/// `secretTargetRef[]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthSecretTargetRef {
    /// Scaler parameter to fill.
    pub parameter: String,
    /// Secret name.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// `configMapTargetRef[]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthConfigMapTargetRef {
    /// Scaler parameter to fill.
    pub parameter: String,
    /// ConfigMap name.
    pub name: String,
    /// Key in the ConfigMap's data.
    pub key: String,
}

/// `env[]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// Scaler parameter to fill.
    pub parameter: String,
    /// Environment variable name.
    pub name: String,
    /// Container (default: the first, or `envSourceContainerName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// `podIdentity`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthPodIdentity {
    /// `aws`, `aws-eks`, `azure-workload`, `gcp` or `none`.
    #[serde(default)]
    pub provider: String,
    /// Azure/GCP identity.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "identityId")]
    pub identity_id: Option<String>,
    /// Azure tenant.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "identityTenantId")]
    pub identity_tenant_id: Option<String>,
    /// Azure authority host.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "identityAuthorityHost"
    )]
    pub identity_authority_host: Option<String>,
    /// AWS role to assume.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "roleArn")]
    pub role_arn: Option<String>,
    /// External ID for AssumeRole.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "externalID")]
    pub external_id: Option<String>,
    /// `keda` (ebb's own identity) or `workload` (the scale target's service account).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "identityOwner")]
    pub identity_owner: Option<String>,
}

/// Status: which objects reference this authentication.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    /// Comma-separated ScaledObject names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// Comma-separated ScaledJob names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

/// The cluster-scoped twin of TriggerAuthentication.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    plural = "clustertriggerauthentications",
    shortname = "cta",
    shortname = "clustertriggerauth",
    category = "keda",
    status = "TriggerAuthenticationStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"FilePath","type":"string","jsonPath":".spec.filePath"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
)]
pub struct ClusterTriggerAuthenticationSpec {
    /// Same fields as a TriggerAuthentication.
    #[serde(flatten)]
    pub spec: TriggerAuthenticationSpec,
}

/// Schema of an object kept as written: structural schemas need
/// `x-kubernetes-preserve-unknown-fields` rather than `additionalProperties: true`.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of free-form objects (see [`free_form_object`]).
fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

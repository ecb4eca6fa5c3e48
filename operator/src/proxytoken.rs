//! kube-proxy's credential on a worker: a token of the `kube-system/kube-proxy`
//! ServiceAccount from the TokenRequest API, never stored in the API.
//!
//! Why not a client certificate like the kubelet's: the only signer for it is
//! `kubernetes.io/kube-apiserver-client`, and an operator allowed to approve
//! for that signer could mint any identity, `system:masters` included.

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use kubeup_provision::hostplan::worker::KUBE_PROXY_SERVICE_ACCOUNT;
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Lifetime asked for: as long as the certificates kubeup issues. The
/// operator renews it, like a certificate, when a reconcile finds fewer than
/// the minimum days left.
pub const LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// The subject every kube-proxy token must carry.
pub fn subject() -> String {
    let (ns, name) = KUBE_PROXY_SERVICE_ACCOUNT;
    format!("system:serviceaccount:{ns}:{name}")
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

/// Whether the JWT payload found on the host (the middle, base64url part
/// only: the signature never leaves the host) is kube-proxy's and still has
/// `min_days` to live. `Err` says why not.
pub fn is_current(
    payload_b64: &str,
    now_unix: i64,
    min_days: i64,
) -> std::result::Result<(), String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload_b64.trim().trim_end_matches('='))
        .map_err(|_| "the token file is not a JWT".to_string())?;
    let claims: Claims =
        serde_json::from_slice(&raw).map_err(|_| "the token has no sub/exp claims".to_string())?;
    if claims.sub != subject() {
        return Err(format!(
            "the token is for {:?}, not {}",
            claims.sub,
            subject()
        ));
    }
    let left = claims.exp - now_unix;
    if left < min_days * 24 * 3600 {
        return Err(format!("the token expires in {} day(s)", left / 86_400));
    }
    Ok(())
}

/// A fresh token for kube-proxy.
pub async fn request(client: &kube::Client) -> Result<SecretString> {
    let (ns, name) = KUBE_PROXY_SERVICE_ACCOUNT;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(LIFETIME_SECS),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let out = api
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .map_err(Error::kube(format!(
            "request a token for ServiceAccount {ns}/{name} (is it there, and may the operator create serviceaccounts/token for it?)"
        )))?;
    let token = out.status.map(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        return Err(Error::Certificate {
            name: subject(),
            reason: "the TokenRequest returned no token".into(),
        });
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(sub: &str, exp: i64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"aud":["https://kubernetes.default.svc"],"sub":"{sub}","exp":{exp}}}"#
        ))
    }

    #[test]
    fn a_token_is_current_while_it_has_days_left_and_is_kube_proxys() {
        let now = 1_800_000_000;
        let sub = subject();
        assert_eq!(
            is_current(&payload(&sub, now + 30 * 86_400), now, 7),
            Ok(())
        );
        let short = is_current(&payload(&sub, now + 3 * 86_400), now, 7).unwrap_err();
        assert!(short.contains("3 day"), "{short}");
        let other = is_current(
            &payload("system:serviceaccount:default:x", now + 99 * 86_400),
            now,
            7,
        );
        assert!(
            other
                .unwrap_err()
                .contains("not system:serviceaccount:kube-system:kube-proxy")
        );
        assert!(is_current("", now, 7).is_err());
        assert!(is_current("not base64 !", now, 7).is_err());
    }
}

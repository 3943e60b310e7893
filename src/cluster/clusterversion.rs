//! The release image the cluster itself would upgrade to (ocp-release.md §6.1): ClusterVersion
//! `version` lists digest-pinned images in `status.desired`, `availableUpdates`,
//! `conditionalUpdates[].release` and `history`.

use serde_json::Value;

/// A known risk of a conditional update, as ClusterVersion states it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Risk {
    pub name: String,
    pub message: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRelease {
    /// Digest-pinned pull spec.
    pub image: String,
    /// Where it was found: `desired`, `availableUpdates`, `conditionalUpdates`, `history`.
    pub found_in: &'static str,
    /// Known risks of a conditional update.
    pub risks: Vec<Risk>,
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn risks_of(update: &Value) -> Vec<Risk> {
    update["risks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Risk {
            name: text(r, "name"),
            message: text(r, "message"),
            url: text(r, "url"),
        })
        .collect()
}

/// An update the cluster is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub version: String,
    /// Digest-pinned pull spec.
    pub image: String,
    /// Empty for `availableUpdates`.
    pub risks: Vec<Risk>,
}

/// Every update ClusterVersion offers: `availableUpdates`, then `conditionalUpdates`.
pub fn offered(cluster_version: &Value) -> Vec<Offered> {
    let status = &cluster_version["status"];
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    let mut offered: Vec<Offered> = Vec::new();
    let mut add = |release: &Value, risks: Vec<Risk>| {
        let version = text(release, "version");
        let image = text(release, "image");
        if !version.is_empty() && !image.is_empty() && !offered.iter().any(|o| o.version == version)
        {
            offered.push(Offered {
                version,
                image,
                risks,
            });
        }
    };
    for release in list("availableUpdates") {
        add(&release, Vec::new());
    }
    for update in list("conditionalUpdates") {
        add(&update["release"], risks_of(&update));
    }
    offered
}

/// `version` in ClusterVersion's status, in the order oc and the CVO consult it.
pub fn find_release(cluster_version: &Value, version: &str) -> Option<ClusterRelease> {
    let status = &cluster_version["status"];
    let is = |release: &Value| {
        release["version"].as_str() == Some(version)
            && release["image"].as_str().is_some_and(|i| !i.is_empty())
    };
    let found = |release: &Value, found_in, risks| ClusterRelease {
        image: text(release, "image"),
        found_in,
        risks,
    };
    if is(&status["desired"]) {
        return Some(found(&status["desired"], "desired", Vec::new()));
    }
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    if let Some(release) = list("availableUpdates").iter().find(|r| is(r)) {
        return Some(found(release, "availableUpdates", Vec::new()));
    }
    if let Some(update) = list("conditionalUpdates")
        .iter()
        .find(|u| is(&u["release"]))
    {
        return Some(found(
            &update["release"],
            "conditionalUpdates",
            risks_of(update),
        ));
    }
    list("history")
        .iter()
        .find(|r| is(r))
        .map(|r| found(r, "history", Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn looks_everywhere_in_order() {
        let cv = json!({"status": {
            "desired": {"version": "4.18.15", "image": "q/r@sha256:desired"},
            "availableUpdates": [{"version": "4.19.0", "image": "q/r@sha256:available"}],
            "conditionalUpdates": [{"release": {"version": "4.19.1", "image": "q/r@sha256:conditional"},
                "risks": [{"name": "SomeRisk", "message": "may break X", "url": "https://r", "matchingRules": []}]}],
            "history": [{"version": "4.18.15", "image": "q/r@sha256:desired"}, {"version": "4.17.9", "image": "q/r@sha256:old", "state": "Completed"}]
        }});
        assert_eq!(find_release(&cv, "4.18.15").unwrap().found_in, "desired");
        assert_eq!(
            find_release(&cv, "4.19.0").unwrap().image,
            "q/r@sha256:available"
        );
        let conditional = find_release(&cv, "4.19.1").unwrap();
        assert_eq!(conditional.found_in, "conditionalUpdates");
        assert_eq!(conditional.risks[0].name, "SomeRisk");
        assert_eq!(find_release(&cv, "4.17.9").unwrap().found_in, "history");
        assert_eq!(find_release(&cv, "4.20.0"), None);
        assert_eq!(find_release(&json!({}), "4.19.0"), None);
        let offered = offered(&cv);
        assert_eq!(
            offered
                .iter()
                .map(|o| o.version.as_str())
                .collect::<Vec<_>>(),
            ["4.19.0", "4.19.1"]
        );
        assert_eq!(offered[1].risks[0].name, "SomeRisk");
        assert!(offered[0].risks.is_empty());
    }
}

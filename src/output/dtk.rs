//! Rendering of `kubectl kmm dtk`.

use super::{Format, Term, human_bytes, stdout, to_json, to_yaml};
use crate::registry::Transferred;
use crate::release::nodeos::NodeKernelStatus;
use crate::release::{DtkAnswer, DtkStream, Resolution};

pub fn text(answer: &DtkAnswer) -> String {
    let rows = [
        ("Release image", answer.release_image.as_str()),
        ("Release version", answer.release_version.as_str()),
        ("Architecture", answer.architecture.as_str()),
        ("DTK image", answer.dtk_image.as_str()),
        ("Kernel", answer.kernel_version.as_str()),
        (
            "RT kernel",
            answer.rt_kernel_version.as_deref().unwrap_or("(none)"),
        ),
        (
            "RHEL",
            answer.rhel_version.as_deref().unwrap_or("(unknown)"),
        ),
    ];
    let mut text: String = rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect();
    if let Some(line) = answer.streams.first().and_then(node_kernel_line) {
        text.push_str(&format!("{:<16} {line}\n", "Node kernel"));
    }
    // The payload's other streams (5.x: RHEL 10), after the RHEL 9 answer above.
    for stream in answer.streams.iter().skip(1) {
        let rhel = stream.rhel_version.as_deref().unwrap_or("(unknown)");
        text.push_str(&format!(
            "\n{:<16} {}\n",
            format!("DTK (RHEL {rhel})"),
            stream.dtk_image
        ));
        text.push_str(&format!("{:<16} {}\n", "  Kernel", stream.kernel_version));
        text.push_str(&format!(
            "{:<16} {}\n",
            "  RT kernel",
            stream.rt_kernel_version.as_deref().unwrap_or("(none)")
        ));
        if let Some(line) = node_kernel_line(stream) {
            text.push_str(&format!("{:<16} {line}\n", "  Node kernel"));
        }
    }
    text
}

/// The kernel the stream's nodes will boot, next to the driver-toolkit's: one line.
fn node_kernel_line(stream: &DtkStream) -> Option<String> {
    let os = stream.node_os.as_ref()?;
    let tag = os.tag.as_deref().unwrap_or("node OS");
    let from = os.source.as_deref().unwrap_or("its image");
    Some(match os.status {
        NodeKernelStatus::Agrees => {
            let rt = match (&os.rt_kernel_version, &stream.rt_kernel_version) {
                (Some(_), _) => " and RT kernel",
                (None, Some(_)) => " (RT kernel unconfirmed)",
                (None, None) => "",
            };
            format!("the same: {tag} carries the DTK's kernel{rt} ({from})")
        }
        NodeKernelStatus::Differs => {
            let mut kernels = Vec::new();
            if let Some(k) = os.differing(&stream.kernel_version) {
                kernels.push(k.to_string());
            }
            if let Some(k) = os.differing_rt(stream.rt_kernel_version.as_deref()) {
                kernels.push(k.to_string());
            }
            format!(
                "{} DIFFERS from the DTK's: {tag} boots it ({from}); KMM checks and builds for the DTK's",
                kernels.join(", ")
            )
        }
        NodeKernelStatus::Unconfirmed => {
            "unconfirmed (see the warning): the DTK's is assumed".into()
        }
    })
}

pub fn print(answer: &DtkAnswer, format: Format) {
    let rendered = match format {
        Format::Text => text(answer),
        Format::Json => to_json(answer),
        Format::Yaml => to_yaml(answer),
    };
    stdout(&rendered);
}

/// `-v`: what it cost to get the answer.
pub fn report_transfer(term: &Term, resolution: &Resolution, transferred: Transferred) {
    if resolution.from_cache {
        term.info(&format!(
            "answer from cache ({} requests, {} of manifests, no blobs)",
            transferred.requests,
            human_bytes(transferred.manifest_bytes)
        ));
        return;
    }
    let images = resolution.release_size + resolution.dtk_size;
    let fetched = transferred.manifest_bytes + transferred.blob_bytes;
    let share = if images > 0 {
        format!(
            " ({:.3}% of their size)",
            fetched as f64 * 100.0 / images as f64
        )
    } else {
        String::new()
    };
    term.info(&format!(
        "fetched {fetched} bytes ({} manifests, {} blobs) in {} requests from images of {} bytes \
         (release {}, driver-toolkit {}){share}",
        human_bytes(transferred.manifest_bytes),
        human_bytes(transferred.blob_bytes),
        transferred.requests,
        images,
        human_bytes(resolution.release_size),
        human_bytes(resolution.dtk_size),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_field() {
        let answer = DtkAnswer {
            release_image: "r@sha256:1".into(),
            release_digest: "sha256:1".into(),
            release_version: "4.19.0".into(),
            architecture: "x86_64".into(),
            dtk_image: "d@sha256:2".into(),
            kernel_version: "5.14.0-570.19.1.el9_6.x86_64".into(),
            rt_kernel_version: None,
            rhel_version: Some("9.6".into()),
            node_os: None,
            streams: vec![],
        };
        let text = text(&answer);
        assert!(text.contains("Kernel           5.14.0-570.19.1.el9_6.x86_64\n"));
        assert!(text.contains("RT kernel        (none)\n"));
        let json = to_json(&answer);
        assert!(json.contains("\"rtKernelVersion\": null"));
    }
}

//! The browser UI's static files: three vendored libraries (htmx, tus-js-client, hash-wasm's
//! SHA-256 build; versions, npm integrity strings and licences in `static/vendor/README.md`),
//! our two page scripts and our one stylesheet. All are compiled into the binary with
//! `include_bytes!` and served at content-hashed URLs (`/static/htmx.min.<16 hex>.js`), so a
//! page names the exact bytes it was built with and a browser may cache them forever.
//!
//! Templates ask [`url`] for a file's current URL; the router mounts [`serve`] at
//! `GET /static/{file}`. Any other name, including a stale hash, is a 404. The vendored files'
//! SHA-256 digests are pinned by a test below, the same as in the vendor README.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::LazyLock;

/// One embedded static file.
pub struct Asset {
    /// Its plain file name, e.g. `htmx.min.js`: what templates pass to [`url`].
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every static file the UI serves.
pub static ASSETS: &[Asset] = &[
    Asset {
        name: "htmx.min.js",
        content_type: JS,
        bytes: include_bytes!("../../static/vendor/htmx/htmx.min.js"),
    },
    Asset {
        name: "tus.min.js",
        content_type: JS,
        bytes: include_bytes!("../../static/vendor/tus-js-client/tus.min.js"),
    },
    Asset {
        name: "sha256.umd.min.js",
        content_type: JS,
        bytes: include_bytes!("../../static/vendor/hash-wasm/sha256.umd.min.js"),
    },
    Asset {
        name: "upload.js",
        content_type: JS,
        bytes: include_bytes!("../../static/upload.js"),
    },
    Asset {
        name: "collect.js",
        content_type: JS,
        bytes: include_bytes!("../../static/collect.js"),
    },
    Asset {
        name: "login.js",
        content_type: JS,
        bytes: include_bytes!("../../static/login.js"),
    },
    Asset {
        name: "airlock.css",
        content_type: CSS,
        bytes: include_bytes!("../../static/airlock.css"),
    },
];

/// How many hex digits of the SHA-256 go into a URL (64 bits: no accidental collisions).
const HASH_HEX: usize = 16;

/// The hashed file name of an asset: `<stem>.<16 hex of SHA-256>.<ext>`.
fn hashed_name(a: &Asset) -> String {
    let hex = hex::encode(Sha256::digest(a.bytes));
    let (stem, ext) = a.name.rsplit_once('.').unwrap_or((a.name, ""));
    format!("{stem}.{}.{ext}", &hex[..HASH_HEX])
}

/// Plain name -> URL, and hashed file name -> asset; both computed once.
struct Index {
    urls: HashMap<&'static str, String>,
    files: HashMap<String, &'static Asset>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut urls = HashMap::new();
    let mut files = HashMap::new();
    for a in ASSETS {
        let file = hashed_name(a);
        urls.insert(a.name, format!("/static/{file}"));
        files.insert(file, a);
    }
    Index { urls, files }
});

/// The current URL of the asset named `name` (its plain file name, e.g. `"upload.js"`), like
/// `/static/upload.3fa2b1c0d4e5f607.js`.
///
/// # Panics
/// On a name not in [`ASSETS`]: names are compile-time constants of our templates, so this is
/// a programming error, caught by any test that renders the page.
pub fn url(name: &str) -> &'static str {
    match INDEX.urls.get(name) {
        Some(u) => u.as_str(),
        None => panic!("ui::assets::url: no static asset named {name:?}"),
    }
}

/// The asset behind a hashed file name (the last path segment of a [`url`]), if current.
fn lookup(file: &str) -> Option<&'static Asset> {
    INDEX.files.get(file).copied()
}

/// `GET /static/{file}`: the asset with its type, cached for a year as immutable (its URL
/// changes with its bytes). Anything but a current hashed name is a 404.
pub async fn serve(Path(file): Path<String>) -> Response {
    let nosniff = (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    match lookup(&file) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                nosniff,
            ],
            a.bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                nosniff,
            ],
            "not found\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files' SHA-256, as in `static/vendor/README.md`. A change to any of them
    /// must be deliberate: update the README (version, integrity, digest) and this list.
    const PINNED: &[(&str, &str)] = &[
        (
            "htmx.min.js",
            "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
        ),
        (
            "tus.min.js",
            "8cbb1b63fccc3bba0ae73ad1deb160ce046c3750851d0c3e94921ae3ef070eb8",
        ),
        (
            "sha256.umd.min.js",
            "0ab0ba5a8242ca02d4403e08a60b9308cb7322a175c3a5c3071c595fad1e65de",
        ),
    ];

    fn asset(name: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.name == name).expect(name)
    }

    #[test]
    fn vendored_files_are_pinned() {
        for (name, want) in PINNED {
            let got = hex::encode(Sha256::digest(asset(name).bytes));
            assert_eq!(
                &got, want,
                "{name} changed: update static/vendor/README.md and PINNED deliberately"
            );
        }
    }

    #[test]
    fn vendor_readme_names_the_pinned_digests() {
        let readme = include_str!("../../static/vendor/README.md");
        for (name, want) in PINNED {
            assert!(readme.contains(want), "README lacks {name}'s digest {want}");
        }
    }

    #[test]
    fn names_are_unique_and_typed() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.name), "{} twice", a.name);
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
            let want = if a.name.ends_with(".css") { CSS } else { JS };
            assert_eq!(a.content_type, want, "{}", a.name);
        }
    }

    #[test]
    fn every_url_maps_back_to_its_asset() {
        for a in ASSETS {
            let u = url(a.name);
            let file = u.strip_prefix("/static/").expect(u);
            assert!(!file.contains('/'), "{u}");
            let (stem, ext) = a.name.rsplit_once('.').unwrap();
            let hash = file
                .strip_prefix(&format!("{stem}."))
                .and_then(|r| r.strip_suffix(&format!(".{ext}")))
                .expect(u);
            assert_eq!(hash.len(), HASH_HEX, "{u}");
            assert!(hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(std::ptr::eq(lookup(file).expect(u), a), "{u}");
            // The same &'static str every time.
            assert!(std::ptr::eq(url(a.name), u));
        }
    }

    #[test]
    #[should_panic(expected = "no static asset")]
    fn unknown_name_panics() {
        url("nope.js");
    }

    #[tokio::test]
    async fn serves_a_current_name_with_headers() {
        for a in ASSETS {
            let file = url(a.name).trim_start_matches("/static/").to_string();
            let r = serve(Path(file)).await;
            assert_eq!(r.status(), StatusCode::OK, "{}", a.name);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], a.content_type);
            assert_eq!(
                h[header::CACHE_CONTROL],
                "public, max-age=31536000, immutable"
            );
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let body = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(&body[..], a.bytes);
        }
    }

    #[tokio::test]
    async fn stale_or_unknown_names_are_404() {
        let current = url("htmx.min.js")
            .trim_start_matches("/static/")
            .to_string();
        let stale = format!("htmx.min.{}.js", "0".repeat(HASH_HEX));
        assert_ne!(current, stale);
        for file in [
            stale.as_str(),
            "htmx.min.js",
            "upload.js",
            "",
            "..",
            "../Cargo.toml",
            "vendor/htmx/htmx.min.js",
            &current.to_uppercase(),
            &format!("{current}.map"),
            &current.replace(".js", ".css"),
        ] {
            let r = serve(Path(file.to_string())).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{file:?}");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }
}

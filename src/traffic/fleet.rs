//! The estate the generated traffic runs on: two load balancers, five target groups (one of
//! them a Lambda function) with 32 targets, their routes and latencies, the clients' user
//! agents and the scanners the WAF stops. Pure data plus the two draws every request makes
//! from it (a weighted pick, a target processing time); it hands them to the request shapes
//! and to the incident script, which names its victims from here.

use crate::rng::SplitMix64;

pub(super) const SHOP: &str = "app/shop-prod/50dc6c495c0c9188";
pub(super) const API: &str = "app/api-prod/8a2f1e3b4c5d6e7f";

/// A load balancer of the estate.
pub(super) struct Lb {
    pub(super) name: &'static str,
    pub(super) host: &'static str,
    /// The DNS name clients that send garbage use instead of the host.
    pub(super) dns: &'static str,
    /// Share of all requests, percent.
    pub(super) weight: u64,
}

pub(super) const LBS: [Lb; 2] = [
    Lb {
        name: SHOP,
        host: "shop.example.com",
        dns: "shop-prod-1234567890.us-east-1.elb.amazonaws.com",
        weight: 55,
    },
    Lb {
        name: API,
        host: "api.example.com",
        dns: "api-prod-987654321.us-east-1.elb.amazonaws.com",
        weight: 45,
    },
];

/// A target group behind one load balancer.
pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) arn: &'static str,
    pub(super) lb: usize,
    /// Share of its load balancer's forwarded requests, percent.
    pub(super) weight: u64,
    /// Empty for a Lambda group: AWS logs `target:port` as `-` when the target is a Lambda.
    pub(super) targets: &'static [&'static str],
    /// `matched_rule_priority` of the listener rule routing to the group (`0` = default).
    pub(super) rule: &'static str,
    /// Method and path; a path ending in `/` or `=` gets an id appended.
    pub(super) routes: &'static [(&'static str, &'static str)],
    /// Typical target processing time: at least `min_us`, plus up to `spread_us`.
    pub(super) min_us: u64,
    pub(super) spread_us: u64,
}

pub(super) const GROUPS: [Group; 5] = [
    Group {
        name: "web-prod",
        arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-prod/73e2d6bc24d8a067",
        lb: 0,
        weight: 75,
        targets: &[
            "10.0.1.11:8080",
            "10.0.1.12:8080",
            "10.0.1.13:8080",
            "10.0.1.14:8080",
            "10.0.1.15:8080",
            "10.0.1.16:8080",
            "10.0.1.17:8080",
            "10.0.1.18:8080",
            "10.0.1.19:8080",
            "10.0.1.20:8080",
        ],
        rule: "0",
        routes: &[
            ("GET", "/"),
            ("GET", "/products/"),
            ("GET", "/category/running-shoes"),
            ("GET", "/static/js/app.7f3a9c.js"),
            ("GET", "/api/v2/catalog/products/"),
        ],
        min_us: 3_000,
        spread_us: 60_000,
    },
    Group {
        name: "checkout",
        arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout/1a2b3c4d5e6f7a8b",
        lb: 0,
        weight: 25,
        targets: &[
            "10.0.3.11:8443",
            "10.0.3.12:8443",
            "10.0.3.13:8443",
            "10.0.3.14:8443",
            "10.0.3.15:8443",
            "10.0.3.16:8443",
        ],
        rule: "10",
        routes: &[
            ("GET", "/cart"),
            ("POST", "/cart/items"),
            ("POST", "/checkout/session"),
            ("GET", "/checkout/confirmation/"),
        ],
        min_us: 25_000,
        spread_us: 250_000,
    },
    Group {
        name: "api-prod",
        arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api-prod/0f0e0d0c0b0a0908",
        lb: 1,
        weight: 60,
        targets: &[
            "10.0.2.11:8080",
            "10.0.2.12:8080",
            "10.0.2.13:8080",
            "10.0.2.14:8080",
            "10.0.2.15:8080",
            "10.0.2.16:8080",
            "10.0.2.17:8080",
            "10.0.2.18:8080",
            "10.0.2.19:8080",
            "10.0.2.20:8080",
        ],
        rule: "0",
        routes: &[
            ("GET", "/v2/orders/"),
            ("POST", "/v2/orders"),
            ("GET", "/v2/users/me"),
            ("GET", "/v2/inventory/"),
        ],
        min_us: 5_000,
        spread_us: 90_000,
    },
    Group {
        name: "search",
        arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/search/5c6d7e8f9a0b1c2d",
        lb: 1,
        weight: 28,
        targets: &[
            "10.0.4.11:8080",
            "10.0.4.12:8080",
            "10.0.4.13:8080",
            "10.0.4.14:8080",
            "10.0.4.15:8080",
            "10.0.4.16:8080",
        ],
        rule: "20",
        routes: &[
            ("GET", "/v2/search?q=trail+shoes&page="),
            ("GET", "/v2/suggest?q="),
        ],
        min_us: 10_000,
        spread_us: 140_000,
    },
    Group {
        name: "thumbnail-fn",
        arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/thumbnail-fn/9e8d7c6b5a493827",
        lb: 1,
        weight: 12,
        targets: &[],
        rule: "30",
        routes: &[("GET", "/v2/thumbnails/"), ("POST", "/v2/thumbnails")],
        min_us: 20_000,
        spread_us: 180_000,
    },
];

pub(super) const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];

/// What the WAF's managed rules stop: the background trickle and the scripted scan alike.
pub(super) const PROBES: [&str; 5] = [
    "/wp-login.php",
    "/.env",
    "/cgi-bin/luci/;stok=/locale",
    "/api/v2/search?q=%27%20OR%201=1--",
    "/phpmyadmin/index.php",
];
pub(super) const SCANNERS: [&str; 3] = ["45.155.205.17", "45.155.205.18", "193.142.146.35"];
pub(super) const SCANNER_AGENT: &str = "Mozilla/5.0 zgrab/0.x";

/// Index of a weighted choice among `(index, weight)` pairs (weights sum above zero).
pub(super) fn pick_weighted(
    r: &mut SplitMix64,
    items: impl Iterator<Item = (usize, u64)> + Clone,
) -> usize {
    let total: u64 = items.clone().map(|(_, w)| w).sum();
    let mut roll = r.below(total.max(1));
    let mut last = 0;
    for (i, w) in items {
        if roll < w {
            return i;
        }
        roll -= w;
        last = i;
    }
    last
}

/// Target processing time: mostly fast, a 3 % tail ten times slower and a rare second or two,
/// the long tail real applications show (and that latency quantiles should not alert on).
pub(super) fn latency_us(r: &mut SplitMix64, g: &Group) -> u64 {
    let base = g.min_us + r.below(g.spread_us);
    match r.below(1_000) {
        0..3 => 1_000_000 + r.below(2_000_000),
        3..33 => base * 10,
        _ => base,
    }
}

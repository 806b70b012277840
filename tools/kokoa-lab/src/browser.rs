//! A person watching the Web UI's Edge nodes page in a real headless Chromium (driven
//! over WebDriver by Debian's `chromedriver`) while the failover scenario kills an edge:
//! the page must show the edge unhealthy on its own, without a reload.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fantoccini::{Client, ClientBuilder, Locator};
use kokoa_control::auth::totp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{lab::Lab, supervisor::Spec};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver's name in the lab's supervisor.
const CHILD: &str = "chromedriver";
/// The longest wait for one element or page.
const WAIT: Duration = Duration::from_secs(20);
/// The watcher's account: a viewer (it only looks).
const EMAIL: &str = "watcher@lab.test";
const PASSWORD: &str = "the lab watches its edges";

/// Set up on the open page: records (`Date.now()`) when the health cell of edge `id` first
/// shows `unhealthy`, whatever the page redraws, and marks the window so a reload shows.
const OBSERVE: &str = "const [id] = arguments;
    window.kokoaMark = 'same page';
    window.kokoaUnhealthyAt = null;
    const look = () => {
      const cell = document.querySelector(`[data-edge-health='${id}']`);
      if (window.kokoaUnhealthyAt === null && cell && cell.textContent.trim() === 'unhealthy')
        window.kokoaUnhealthyAt = Date.now();
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true });
    look();";

/// The Edge nodes page, open in a signed-in browser.
#[derive(Debug)]
pub struct EdgesPage {
    client: Client,
    edge: String,
}

impl EdgesPage {
    /// Creates the watcher's account, starts chromedriver and Chromium, signs in (password,
    /// then the second factor it sets up, the code computed here), opens `/ui/edges` and
    /// waits until edge `edge_name` shows healthy.
    pub async fn open(lab: &mut Lab, base: &str, edge_name: &str) -> Result<Self, String> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(path).exists() {
                return Err(format!(
                    "{path} is missing: apt-get install -y --no-install-recommends {package} \
                     (scripts/install-deps does)"
                ));
            }
        }
        let edges = lab
            .api
            .json(Method::GET, "/api/v1/edge-nodes", None, StatusCode::OK)
            .await
            .map_err(|e| e.to_string())?;
        let edge = edges["edge_nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == edge_name)
            .and_then(|e| e["id"].as_str())
            .ok_or_else(|| format!("{edge_name} is not listed"))?
            .to_owned();
        lab.api
            .json(
                Method::POST,
                "/api/v1/users",
                Some(json!({"email": EMAIL, "role": "viewer", "password": PASSWORD})),
                StatusCode::CREATED,
            )
            .await
            .map_err(|e| e.to_string())?;
        // chromedriver on a free port of the root namespace's loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port for chromedriver: {e}"))?
            .port();
        let argv = vec![CHROMEDRIVER.to_owned(), format!("--port={port}")];
        lab.supervisor
            .start(&mut lab.ledger, CHILD, Spec::root(argv))
            .map_err(|e| e.to_string())?;
        let client = match session(port, base, &lab.dir.join("chromium")).await {
            Ok(client) => client,
            Err(e) => {
                let _ = lab.supervisor.stop(&mut lab.ledger, CHILD).await;
                return Err(e);
            }
        };
        let page = Self { client, edge };
        match page.show_edges(base, edge_name).await {
            Ok(()) => Ok(page),
            Err(e) => {
                page.close(lab).await;
                Err(e)
            }
        }
    }

    /// Signs in, opens `/ui/edges`, starts watching the edge's health cell and waits until
    /// it shows healthy.
    async fn show_edges(&self, base: &str, edge_name: &str) -> Result<(), String> {
        self.sign_in(base).await?;
        self.client
            .goto(&format!("{base}/ui/edges"))
            .await
            .map_err(|e| format!("open /ui/edges: {e}"))?;
        self.element("#app[data-ready]").await?;
        let cell = format!("[data-edge-health='{}']", self.edge);
        let started = Instant::now();
        while self.text(&cell).await.as_deref() != Some("healthy") {
            if started.elapsed() > WAIT {
                return Err(format!(
                    "{edge_name} never showed healthy on the Edge nodes page ({:?})",
                    self.text(&cell).await
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client
            .execute(OBSERVE, vec![json!(self.edge)])
            .await
            .map(drop)
            .map_err(|e| format!("watch the page: {e}"))
    }

    async fn sign_in(&self, base: &str) -> Result<(), String> {
        self.client
            .goto(&format!("{base}/login"))
            .await
            .map_err(|e| format!("open /login: {e}"))?;
        self.fill("#email", EMAIL).await?;
        self.fill("#password", PASSWORD).await?;
        self.click("button[type=submit]").await?;
        // First sign-in: the second factor is set up with the secret the page shows.
        let secret = self
            .element("#totp-secret")
            .await?
            .attr("data-secret")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the enrollment page shows no secret")?;
        let step = totp::step_of(kokoa_core::Timestamp::now());
        let code = totp::code_at_step(&secret, step).ok_or("the secret is not base32")?;
        self.fill("#code", &code).await?;
        self.click("button[type=submit]").await?;
        self.element("#recovery-codes").await?;
        self.click("a.button").await?;
        self.element("#app[data-ready]").await.map(drop)
    }

    /// Waits until the page has shown the edge unhealthy; returns how long after `since`
    /// it did. Fails if the page was reloaded meanwhile or showed it before `since`.
    pub async fn unhealthy_after(
        &self,
        since: SystemTime,
        limit: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let seen = self
                .client
                .execute(
                    "return [window.kokoaMark || null, window.kokoaUnhealthyAt];",
                    vec![],
                )
                .await
                .map_err(|e| format!("read the page: {e}"))?;
            if seen[0] != "same page" {
                return Err("the Edge nodes page was reloaded".into());
            }
            if let Some(at) = seen[1].as_f64() {
                let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
                let after = at / 1000.0 - since.as_secs_f64();
                // Date.now() has millisecond steps; anything earlier is a real mistake.
                if after < -0.001 {
                    return Err(format!(
                        "the page showed the edge unhealthy {:.1} s before the kill",
                        -after
                    ));
                }
                return Ok(Duration::from_secs_f64(after.max(0.0)));
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "the Edge nodes page did not show the edge unhealthy within {} s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ends the browser session and stops chromedriver.
    pub async fn close(self, lab: &mut Lab) {
        let _ = self.client.close().await;
        let _ = lab.supervisor.stop(&mut lab.ledger, CHILD).await;
    }

    async fn element(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("{css} did not appear: {e}"))
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok().map(|t| t.trim().to_owned())
    }

    async fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let field = self.element(css).await?;
        field
            .send_keys(text)
            .await
            .map_err(|e| format!("{css}: {e}"))
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let button = self.element(css).await?;
        button.click().await.map_err(|e| format!("{css}: {e}"))
    }
}

/// A Chromium session through the lab's chromedriver, once it answers (bounded). Only the
/// control plane's host (`base`) can be reached, and every phone-home feature is off.
async fn session(port: u16, base: &str, profile: &Path) -> Result<Client, String> {
    let host = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([':', '/']).next())
        .ok_or_else(|| format!("no host in {base}"))?;
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-default-apps", "--disable-extensions",
                // The control plane's certificate is from its own CA, which this throwaway
                // profile does not know; the lab's API client checks it by its pin.
                "--ignore-certificate-errors",
                format!("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {host}"),
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,860",
            ],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() > WAIT => {
                return Err(format!("no Chromium session through {url}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

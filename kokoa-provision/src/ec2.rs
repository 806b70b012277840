//! Amazon EC2 instances through the EC2 Query API (version 2016-11-15): form-encoded POSTs
//! to `https://ec2.{region}.amazonaws.com/`, signed with AWS Signature Version 4 (service
//! `ec2`, the instance's region).
//!
//! | call | `Action=` | answer |
//! |---|---|---|
//! | create | `RunInstances` | `<RunInstancesResponse>…<instancesSet><item><instanceId>i-…` |
//! | status | `DescribeInstances&InstanceId.1=i-…` | `…<instanceState><name>running</name>…<ipAddress>…<ipv6Address>…` |
//! | destroy | `TerminateInstances&InstanceId.1=i-…` | `InvalidInstanceID.NotFound` counts as already destroyed |
//! | list | `DescribeRegions` (unless [`Ec2::with_regions`]), then in each region `DescribeInstances&Filter.1.Name=tag-key&Filter.1.Value.1={tag}&Filter.2.Name=instance-state-name&…&MaxResults=1000[&NextToken=…]` | `<regionInfo><item><regionName>…`; `<reservationSet>…<tagSet>…</reservationSet><nextToken>…` |
//!
//! The provider is named `aws`, as in placements and [`region_code`](crate::region_code)
//! (`("aws", "sgp")` → `ap-southeast-1`). [`InstanceConfig::region`] is the AWS region code,
//! and since every call goes to that region's endpoint, the instance ids this provider
//! hands out carry it: `ap-southeast-1:i-0123456789abcdef0`.
//!
//! - Sizes: an instance type holds a dot, which a [`Name`] cannot; write
//!   it as `-`: `t3-micro` is `t3.micro`, `m7i-flex-large` is `m7i-flex.large`,
//!   `c7i-metal-24xl` is `c7i.metal-24xl`.
//! - Images: an AMI id (`ami-…`, different in every region) or an SSM parameter that AWS
//!   resolves in whichever region the edge goes to, e.g.
//!   `resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id`.
//! - [`InstanceConfig::ssh_key_id`] is the name of an EC2 key pair (`KeyName`).
//! - Tags: `Name` is the edge's name; every other tag becomes a tag key with an empty value.
//! - [`InstanceConfig::idempotency_key`]: sent as the `ClientToken` of `RunInstances` (at
//!   most 64 ASCII characters), so EC2 answers a repeated call with the instance it launched
//!   the first time instead of launching another, and as tag `kokoa-key=<key>`, so
//!   [`Provisioner::find_instance`] finds it. EC2 keeps a token for at least 24 hours after
//!   its instance terminated and refuses it with other parameters
//!   (`IdempotentParameterMismatch`, an [`Error::Conflict`]): a repeated call must send the
//!   same user data, and a new VPS needs a new key.
//! - Listing: EC2's instances live in regions, so [`list_instances`](Provisioner::list_instances)
//!   asks each region the account has enabled (`DescribeRegions`, asked in `us-east-1`), or
//!   only those given to [`Ec2::with_regions`] — quicker, and needed outside the standard
//!   partition. Each region's `DescribeInstances` filters on the tag key and on the states
//!   `pending`, `running`, `stopping` and `stopped`, so terminated instances stay out, and
//!   is read page by page (`NextToken`).
//! - Security groups: without [`Ec2::with_security_groups`], the VPC's default group
//!   applies, which lets nothing in from outside. Give one that opens TCP 80 and 443 and
//!   the WireGuard UDP ports.
//! - Instances require IMDSv2 session tokens (`MetadataOptions.HttpTokens=required`), so a
//!   request forged through the proxy cannot read the instance's metadata.
//!
//! Errors come as `<Response><Errors><Error><Code>…</Code><Message>…`: `AuthFailure` and
//! `UnauthorizedOperation` are [`Error::Auth`]; `IdempotentParameterMismatch`
//! [`Error::Conflict`]; `InstanceLimitExceeded` and
//! `VcpuLimitExceeded` [`Error::Quota`]; `InvalidParameterValue`, `InvalidAMIID.*`,
//! `Unsupported` and other refusals [`Error::Rejected`], naming the region, type and image;
//! `RequestLimitExceeded` [`Error::RateLimited`]; `InvalidInstanceID.NotFound` an instance
//! that is gone; 5xx [`Error::Transient`].

use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use kokoa_core::{
    Timestamp,
    sigv4::{self, Credentials, Payload},
};
use reqwest::{
    Client, StatusCode, Url,
    header::{CONTENT_TYPE, HeaderValue},
};
use serde::{Deserialize, de::DeserializeOwned};

use kokoa_core::Name;

use crate::{
    Error, IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner,
    TaggedInstance,
    http::{Failure, MAX_PAGES, TIMEOUT, default_client, too_many_pages},
};

const NAME: &str = "aws";
const SERVICE: &str = "ec2";
const VERSION: &str = "2016-11-15";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// Where `DescribeRegions` is asked when no regions were given.
const HOME_REGION: &str = "us-east-1";
/// The largest page `DescribeInstances` serves.
const PER_PAGE: &str = "1000";
/// The states of instances that exist: `shutting-down` and `terminated` ones are gone.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// EC2 takes up to 16 KiB of user data before base64.
const MAX_USER_DATA: usize = 16 * 1024;

/// Creates and terminates EC2 instances.
///
/// ```
/// use kokoa_core::sigv4::Credentials;
/// use kokoa_provision::{Provisioner, ec2::Ec2};
///
/// let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
/// let ec2 = Ec2::new(credentials)?.with_security_groups(["sg-0123456789abcdef0"])?;
/// assert_eq!(ec2.name(), "aws");
/// assert!(!format!("{ec2:?}").contains("EXAMPLEKEY"));
/// # Ok::<(), kokoa_provision::Error>(())
/// ```
// Debug is safe to derive: `Credentials` shows the key id only.
#[derive(Debug)]
pub struct Ec2 {
    client: Client,
    endpoint: String,
    credentials: Credentials,
    security_groups: Vec<String>,
    /// The regions [`list_instances`](Provisioner::list_instances) asks; empty: every
    /// region `DescribeRegions` names.
    regions: Vec<String>,
    clock: fn() -> Timestamp,
}

impl Ec2 {
    /// The real API; `{region}` is replaced by the instance's region.
    pub const API_URL: &'static str = "https://ec2.{region}.amazonaws.com";

    /// A provider for the real API with `credentials` (the policy needs
    /// `ec2:RunInstances`, `ec2:CreateTags`, `ec2:DescribeInstances`,
    /// `ec2:TerminateInstances`, and `ec2:DescribeRegions` unless
    /// [`with_regions`](Self::with_regions) is given).
    pub fn new(credentials: Credentials) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, Self::API_URL, credentials)
    }

    /// A provider that sends its calls with `client` to `base_url`, in which `{region}`
    /// stands for the region; without it, every region's calls go to `base_url` (a local
    /// test server, say).
    pub fn with_client(
        client: Client,
        base_url: &str,
        credentials: Credentials,
    ) -> Result<Self, Error> {
        let ec2 = Self {
            client,
            endpoint: base_url.trim_end_matches('/').to_owned(),
            credentials,
            security_groups: Vec::new(),
            regions: Vec::new(),
            clock: Timestamp::now,
        };
        ec2.url("us-east-1")?;
        Ok(ec2)
    }

    /// Puts new instances in these security groups (`sg-…` ids, of the region's default
    /// VPC). Every region has its own groups, so this suits a provider used in one region.
    pub fn with_security_groups<S: Into<String>>(
        mut self,
        ids: impl IntoIterator<Item = S>,
    ) -> Result<Self, Error> {
        self.security_groups = ids.into_iter().map(Into::into).collect();
        if let Some(bad) = self
            .security_groups
            .iter()
            .find(|id| !resource_id(id, "sg-"))
        {
            return Err(Error::invalid(
                "security group",
                bad,
                "expected a security group id such as sg-0123456789abcdef0",
            ));
        }
        Ok(self)
    }

    /// Lists instances in these regions only (`ap-southeast-1`, ...) instead of every region
    /// the account has enabled: one call fewer per region left out, and no need for
    /// `ec2:DescribeRegions`. Give every region edges may be placed in, or
    /// [`find_instance`](Provisioner::find_instance) cannot find theirs.
    pub fn with_regions<S: Into<String>>(
        mut self,
        regions: impl IntoIterator<Item = S>,
    ) -> Result<Self, Error> {
        self.regions = regions.into_iter().map(Into::into).collect();
        if let Some(bad) = self.regions.iter().find(|r| !region_code(r)) {
            return Err(Error::invalid(
                "region",
                bad,
                "expected an AWS region code such as ap-southeast-1",
            ));
        }
        Ok(self)
    }

    /// Reads the time to sign requests with from `clock` instead of the system clock (for
    /// tests that check signatures).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self
    }

    fn url(&self, region: &str) -> Result<Url, Error> {
        let text = self.endpoint.replace("{region}", region);
        Url::parse(&format!("{text}/"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                Error::invalid("API base URL", &self.endpoint, "expected an http(s) URL")
            })
    }

    /// Calls `action` in `region` with `params` and reads the XML answer. `context` (what
    /// was asked for) is added to refusals, so they name the offending value.
    async fn call<T: DeserializeOwned>(
        &self,
        region: &str,
        action: &str,
        params: &[(&str, &str)],
        context: &str,
    ) -> Result<T, Error> {
        let url = self.url(region)?;
        let call = format!("{action} in {region}");
        let body = form(action, params);
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let signed = sigv4::sign(
            &self.credentials,
            region,
            SERVICE,
            (self.clock)(),
            &sigv4::Request {
                method: "POST",
                host: &host,
                path: url.path(),
                headers: &[("content-type", FORM)],
                payload: Payload::Bytes(body.as_bytes()),
                ..sigv4::Request::default()
            },
        );
        let mut request = self
            .client
            .post(url)
            .timeout(TIMEOUT)
            .header(CONTENT_TYPE, FORM);
        for (name, value) in signed.iter() {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                // The value may hold the session token: say what is wrong, not what it is.
                Error::invalid(
                    "AWS credentials",
                    "<hidden>",
                    "the access key id or session token holds characters an HTTP header cannot carry",
                )
            })?;
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        let transient = |e: reqwest::Error| Error::Transient {
            provider: NAME,
            detail: format!("{call}: {}", e.without_url()),
        };
        let response = request.body(body).send().await.map_err(transient)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transient)?;
        if !status.is_success() {
            return Err(answer_error(&call, status, &bytes, context));
        }
        quick_xml::de::from_str(&String::from_utf8_lossy(&bytes)).map_err(|e| Error::Other {
            provider: NAME,
            source: Box::new(Failure(format!("{call}: unexpected answer: {e}"))),
        })
    }
}

#[async_trait]
impl Provisioner for Ec2 {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        config.check(NAME, MAX_USER_DATA)?;
        config.check_no_address()?;
        let region = config.region.as_str();
        if !region_code(region) {
            return Err(Error::invalid(
                "region",
                region,
                "expected an AWS region code such as ap-southeast-1 (region_code(\"aws\", \"sgp\") gives it)",
            ));
        }
        let instance_type = instance_type(config.size.as_str()).ok_or_else(|| {
            Error::invalid(
                "size",
                config.size.as_str(),
                "expected an EC2 instance type with '-' for its dot, such as t3-micro",
            )
        })?;
        let image = config.image.as_str();
        if !(resource_id(image, "ami-") || image.starts_with("resolve:ssm:/")) {
            return Err(Error::invalid(
                "image",
                image,
                "expected an AMI id such as ami-0123456789abcdef0 or resolve:ssm:/<parameter>",
            ));
        }
        let user_data = STANDARD.encode(config.user_data.expose());
        let mut params: Vec<(String, String)> = vec![
            ("ImageId".into(), image.into()),
            ("InstanceType".into(), instance_type.clone()),
            ("MinCount".into(), "1".into()),
            ("MaxCount".into(), "1".into()),
        ];
        if let Some(key) = &config.idempotency_key {
            params.push(("ClientToken".into(), key.to_string()));
        }
        if let Some(key) = &config.ssh_key_id {
            params.push(("KeyName".into(), key.clone()));
        }
        for (n, group) in self.security_groups.iter().enumerate() {
            params.push((format!("SecurityGroupId.{}", n + 1), group.clone()));
        }
        params.push(("UserData".into(), user_data));
        params.push(("MetadataOptions.HttpTokens".into(), "required".into()));
        params.push(("TagSpecification.1.ResourceType".into(), "instance".into()));
        let key = config
            .idempotency_key
            .as_ref()
            .map(|k| (IdempotencyKey::TAG, k.as_str()));
        let tags = std::iter::once(("Name", config.name.as_str()))
            .chain(config.tags.iter().map(|tag| (tag.as_str(), "")))
            .chain(key);
        for (n, (key, value)) in tags.enumerate() {
            let prefix = format!("TagSpecification.1.Tag.{}", n + 1);
            params.push((format!("{prefix}.Key"), key.into()));
            params.push((format!("{prefix}.Value"), value.into()));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let context = format!("region {region}, instance type {instance_type}, image {image}");
        let answer: RunInstancesResponse =
            self.call(region, "RunInstances", &params, &context).await?;
        let instance = answer
            .instances_set
            .items
            .into_iter()
            .next()
            .ok_or_else(|| Error::Other {
                provider: NAME,
                source: Box::new(Failure(format!(
                    "RunInstances in {region}: the answer names no instance"
                ))),
            })?;
        Ok(Instance {
            id: InstanceId::parse(&format!("{region}:{}", instance.instance_id))?,
            status: instance.status(),
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        let (region, instance) = parse_id(id)?;
        let params = [("InstanceId.1", instance)];
        match self
            .call::<serde::de::IgnoredAny>(region, "TerminateInstances", &params, instance)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                tracing::debug!(provider = NAME, "already destroyed: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        let (region, instance) = parse_id(id)?;
        let params = [("InstanceId.1", instance)];
        match self
            .call::<DescribeInstancesResponse>(region, "DescribeInstances", &params, instance)
            .await
        {
            Ok(answer) => Ok(answer
                .reservation_set
                .items
                .into_iter()
                .flat_map(|reservation| reservation.instances_set.items)
                .find(|i| i.instance_id == instance)
                .map_or(InstanceStatus::Gone, |i| i.status())),
            Err(e) if e.is_not_found() => Ok(InstanceStatus::Gone),
            Err(e) => Err(e),
        }
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let regions = if self.regions.is_empty() {
            let answer: DescribeRegionsResponse = self
                .call(HOME_REGION, "DescribeRegions", &[], "regions")
                .await?;
            answer
                .region_info
                .items
                .into_iter()
                .map(|r| r.region_name)
                .filter(|r| region_code(r))
                .collect()
        } else {
            self.regions.clone()
        };
        let mut found = Vec::new();
        for region in &regions {
            self.list_in(region, tag, &mut found).await?;
        }
        Ok(found)
    }
}

impl Ec2 {
    /// Adds the instances of `region` that carry `tag` to `found`, over every page.
    async fn list_in(
        &self,
        region: &str,
        tag: &Name,
        found: &mut Vec<TaggedInstance>,
    ) -> Result<(), Error> {
        let mut filters = vec![
            ("Filter.1.Name".to_owned(), "tag-key".to_owned()),
            ("Filter.1.Value.1".to_owned(), tag.to_string()),
            ("Filter.2.Name".to_owned(), "instance-state-name".to_owned()),
        ];
        for (n, state) in LIVE_STATES.iter().enumerate() {
            filters.push((format!("Filter.2.Value.{}", n + 1), (*state).to_owned()));
        }
        filters.push(("MaxResults".to_owned(), PER_PAGE.to_owned()));
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params: Vec<(&str, &str)> = filters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(token) = &next {
                params.push(("NextToken", token.as_str()));
            }
            let context = format!("instances tagged {tag}");
            let answer: DescribeInstancesResponse = self
                .call(region, "DescribeInstances", &params, &context)
                .await?;
            for instance in answer
                .reservation_set
                .items
                .into_iter()
                .flat_map(|reservation| reservation.instances_set.items)
            {
                let instance = instance.tagged(region)?;
                if instance.status != InstanceStatus::Gone {
                    found.push(instance);
                }
            }
            match answer.next_token.filter(|t| !t.is_empty()) {
                Some(token) => next = Some(token),
                None => return Ok(()),
            }
        }
        Err(too_many_pages(
            NAME,
            &format!("DescribeInstances in {region}"),
        ))
    }
}

/// The form body: `Action` and `Version`, then `params` in their order, encoded as SigV4
/// encodes (a space is `%20`, base64's `+/=` are escaped).
fn form(action: &str, params: &[(&str, &str)]) -> String {
    let all = [("Action", action), ("Version", VERSION)];
    all.iter()
        .chain(params)
        .map(|(name, value)| {
            format!(
                "{}={}",
                sigv4::uri_encode(name, false),
                sigv4::uri_encode(value, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The [`Error`] for a non-2xx answer, by the error code in its body, else its status.
fn answer_error(call: &str, status: StatusCode, body: &[u8], context: &str) -> Error {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Response {
        errors: Errors,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Errors {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorBody {
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = String::from_utf8_lossy(body);
    let (code, message) = match quick_xml::de::from_str::<Response>(&text) {
        Ok(answer) => (answer.errors.error.code, answer.errors.error.message),
        Err(_) => (String::new(), text.trim().chars().take(300).collect()),
    };
    let detail = format!("{call}: HTTP {}: {code}: {message}", status.as_u16());
    let provider = NAME;
    match code.as_str() {
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => Error::Auth { provider, detail },
        "InstanceLimitExceeded" | "VcpuLimitExceeded" => Error::Quota {
            provider,
            detail: format!("{detail} ({context})"),
        },
        "IdempotentParameterMismatch" => Error::Conflict {
            provider,
            detail: format!(
                "{detail}: an instance was launched before with this idempotency key and other parameters; find it with find_instance, or give a new VPS a new key"
            ),
        },
        "RequestLimitExceeded" | "Throttling" => Error::RateLimited {
            provider,
            retry_after: None,
        },
        "InvalidInstanceID.NotFound" => Error::NotFound { provider, detail },
        _ if matches!(status.as_u16(), 401 | 403) => Error::Auth { provider, detail },
        _ if status.is_server_error() => Error::Transient { provider, detail },
        // InvalidParameterValue, InvalidAMIID.*, Unsupported, InvalidKeyPair.NotFound, ...
        _ => Error::Rejected {
            provider,
            detail: format!("{detail} ({context})"),
        },
    }
}

/// `(region, instance)` of an id this provider handed out.
fn parse_id(id: &InstanceId) -> Result<(&str, &str), Error> {
    id.as_str()
        .split_once(':')
        .filter(|(region, instance)| region_code(region) && resource_id(instance, "i-"))
        .ok_or_else(|| {
            Error::invalid(
                "instance id",
                id.as_str(),
                "EC2 instance ids here are <region>:<instance>, e.g. ap-southeast-1:i-0123456789abcdef0",
            )
        })
}

/// An AWS region code: `ap-southeast-1`, `us-gov-west-1`.
fn region_code(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// `prefix` followed by 8 or 17 lowercase hex digits: `i-0123456789abcdef0`.
fn resource_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The instance type written with `-` for its dot: `t3-micro` → `t3.micro`. The size is
/// the last part (`metal-24xl` for the sizes that hold a `-` themselves).
fn instance_type(size: &str) -> Option<String> {
    let is_size = |s: &str| {
        matches!(
            s,
            "nano" | "micro" | "small" | "medium" | "large" | "xlarge" | "metal"
        ) || s
            .strip_suffix("xlarge")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            || s.strip_prefix("metal-")
                .and_then(|rest| rest.strip_suffix("xl"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let (family, size) = match size.rsplit_once('-') {
        Some((head, tail)) if tail.ends_with("xl") && head.ends_with("-metal") => {
            (head.strip_suffix("-metal")?, format!("metal-{tail}"))
        }
        Some((head, tail)) => (head, tail.to_owned()),
        None => return None,
    };
    (!family.is_empty() && is_size(&size)).then(|| format!("{family}.{size}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunInstancesResponse {
    instances_set: Items<Ec2Instance>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInstancesResponse {
    reservation_set: Items<Reservation>,
    /// Present, and not empty, when there is another page.
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRegionsResponse {
    #[serde(default)]
    region_info: Items<RegionItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegionItem {
    region_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reservation {
    #[serde(default)]
    instances_set: Items<Ec2Instance>,
}

/// EC2's lists: `<fooSet><item>…</item><item>…</item></fooSet>`.
#[derive(Deserialize)]
struct Items<T> {
    #[serde(rename = "item", default = "Vec::new")]
    items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ec2Instance {
    instance_id: String,
    instance_state: State,
    ip_address: Option<String>,
    ipv6_address: Option<String>,
    #[serde(default)]
    network_interface_set: Items<Interface>,
    #[serde(default)]
    tag_set: Items<Tag>,
}

#[derive(Deserialize)]
struct State {
    name: String,
}

#[derive(Deserialize)]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Interface {
    #[serde(default)]
    ipv6_addresses_set: Items<Ipv6Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ipv6Item {
    ipv6_address: String,
}

impl Ec2Instance {
    fn status(&self) -> InstanceStatus {
        match self.instance_state.name.as_str() {
            "running" => InstanceStatus::Running {
                ipv4: self
                    .ip_address
                    .as_deref()
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok()),
                ipv6: self.ipv6(),
            },
            "pending" => InstanceStatus::Provisioning,
            "stopping" | "stopped" => InstanceStatus::Stopped,
            "shutting-down" | "terminated" => InstanceStatus::Gone,
            other => {
                tracing::warn!(instance = %self.instance_id, state = other, "unknown EC2 instance state");
                InstanceStatus::Provisioning
            }
        }
    }

    /// The value of its tag `key`.
    fn tag(&self, key: &str) -> Option<&str> {
        self.tag_set
            .items
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    /// As listed: the id carries `region`, the name is the `Name` tag, the key the
    /// `kokoa-key` tag.
    fn tagged(&self, region: &str) -> Result<TaggedInstance, Error> {
        Ok(TaggedInstance {
            id: InstanceId::parse(&format!("{region}:{}", self.instance_id))?,
            status: self.status(),
            name: self.tag("Name").map(str::to_owned),
            idempotency_key: self
                .tag(IdempotencyKey::TAG)
                .and_then(|key| IdempotencyKey::parse(key).ok()),
        })
    }

    /// The instance's IPv6 address, else the first of its network interfaces'.
    fn ipv6(&self) -> Option<Ipv6Addr> {
        let interfaces = self
            .network_interface_set
            .items
            .iter()
            .flat_map(|i| &i.ipv6_addresses_set.items)
            .map(|a| a.ipv6_address.as_str());
        self.ipv6_address
            .as_deref()
            .into_iter()
            .chain(interfaces)
            .find_map(|ip| ip.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_become_instance_types() {
        for (size, expected) in [
            ("t3-micro", Some("t3.micro")),
            ("t4g-small", Some("t4g.small")),
            ("m5-2xlarge", Some("m5.2xlarge")),
            ("m7i-flex-large", Some("m7i-flex.large")),
            ("u-6tb1-metal", Some("u-6tb1.metal")),
            ("c7i-metal-24xl", Some("c7i.metal-24xl")),
            ("t3", None),
            ("t3-tiny", None),
            ("-micro", None),
            ("metal-24xl", None),
        ] {
            assert_eq!(instance_type(size).as_deref(), expected, "{size}");
        }
    }

    #[test]
    fn ids_carry_their_region() {
        let id = InstanceId::parse("ap-southeast-1:i-0123456789abcdef0").unwrap();
        assert_eq!(
            parse_id(&id).unwrap(),
            ("ap-southeast-1", "i-0123456789abcdef0")
        );
        for bad in [
            "i-0123456789abcdef0",
            "sgp1:i-0123456789abcdef0",
            "us-east-1:i-XYZ",
            "us-east-1:vol-0123456789abcdef0",
        ] {
            let err = parse_id(&InstanceId::parse(bad).unwrap()).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(region_code("us-gov-west-1") && region_code("eu-central-2"));
        assert!(!region_code("sgp1") && !region_code("us-east-") && !region_code("usa-east-1"));
    }

    #[test]
    fn form_bodies_escape_what_sigv4_escapes() {
        assert_eq!(
            form("RunInstances", &[("UserData", "I2Nsb3Vk+/Q=")]),
            "Action=RunInstances&Version=2016-11-15&UserData=I2Nsb3Vk%2B%2FQ%3D"
        );
    }

    proptest! {
        #[test]
        fn dotted_types_survive_the_dash_spelling(
            family in "[a-z][a-z0-9]{0,5}(-flex)?",
            size in prop::sample::select(vec!["nano", "micro", "small", "large", "xlarge", "12xlarge", "metal", "metal-48xl"]),
        ) {
            let dashed = format!("{family}-{size}");
            prop_assert_eq!(instance_type(&dashed), Some(format!("{family}.{size}")));
        }
    }
}

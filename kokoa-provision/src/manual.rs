//! An existing VPS registered by hand (provider `manual`).

use std::net::IpAddr;

use async_trait::async_trait;

use kokoa_core::Name;

use crate::{
    Error, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner, TaggedInstance,
};

const NAME: &str = "manual";

/// A VPS someone already runs: creating it only registers its
/// [`address`](InstanceConfig::address), which becomes its [`InstanceId`]; destroying it
/// creates nothing to call, so it logs a line asking a person to destroy it at their
/// provider.
///
/// The user data is not applied: the person runs the enrollment command on the VPS. Nothing
/// is created, so [`list_instances`](Provisioner::list_instances) finds nothing: a VPS
/// registered by hand is known by its address alone.
///
/// ```
/// use kokoa_core::Name;
/// use kokoa_provision::{InstanceConfig, InstanceStatus, Manual, Provisioner, Secret};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let config = InstanceConfig {
///     provider: Name::parse("manual")?,
///     region: Name::parse("home")?,
///     size: Name::parse("any")?,
///     image: "debian-12".into(),
///     ssh_key_id: None,
///     user_data: Secret::new(""),
///     name: Name::parse("edge-home-01")?,
///     tags: vec![],
///     idempotency_key: None,
///     address: Some("203.0.113.40".parse()?),
/// };
/// let instance = runtime.block_on(Manual.create_instance(&config))?;
/// assert_eq!(instance.id.as_str(), "203.0.113.40");
/// assert!(matches!(instance.status, InstanceStatus::Running { .. }));
/// let ssh = runtime.block_on(Manual.ssh_config(&instance.id))?;
/// assert_eq!((ssh.host.to_string(), ssh.port, ssh.user.as_str()), ("203.0.113.40".into(), 22, "root"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Manual;

/// The address an instance id of this provider stands for.
fn address(id: &InstanceId) -> Result<IpAddr, Error> {
    id.as_str().parse().map_err(|_| {
        Error::invalid(
            "instance id",
            id.as_str(),
            "a manual instance's id is its IP address",
        )
    })
}

fn running(address: IpAddr) -> InstanceStatus {
    match address {
        IpAddr::V4(ip) => InstanceStatus::Running {
            ipv4: Some(ip),
            ipv6: None,
        },
        IpAddr::V6(ip) => InstanceStatus::Running {
            ipv4: None,
            ipv6: Some(ip),
        },
    }
}

#[async_trait]
impl Provisioner for Manual {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        // Nothing is sent anywhere, so no size limit applies to the user data.
        config.check(NAME, usize::MAX)?;
        let address = config.address.ok_or_else(|| {
            Error::invalid(
                "address",
                "",
                "the manual provider needs the public address of the existing VPS",
            )
        })?;
        Ok(Instance {
            id: InstanceId::parse(&address.to_string())?,
            status: running(address),
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        let address = address(id)?;
        tracing::warn!(
            %address,
            "the edge VPS at {address} was registered by hand: destroy it at its provider yourself"
        );
        Ok(())
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        address(id).map(running)
    }

    async fn list_instances(&self, _tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn config(address: Option<IpAddr>) -> InstanceConfig {
        InstanceConfig {
            provider: Name::parse("manual").unwrap(),
            region: Name::parse("home").unwrap(),
            size: Name::parse("any").unwrap(),
            image: "debian-12".into(),
            ssh_key_id: None,
            user_data: Secret::new(""),
            name: Name::parse("edge-home-01").unwrap(),
            tags: vec![],
            idempotency_key: None,
            address,
        }
    }

    #[tokio::test]
    async fn registers_the_given_address() {
        let v6: IpAddr = "2001:db8::40".parse().unwrap();
        let instance = Manual.create_instance(&config(Some(v6))).await.unwrap();
        assert_eq!(instance.id.as_str(), "2001:db8::40");
        assert_eq!(instance.status.address(), Some(v6));
        assert_eq!(Manual.ssh_config(&instance.id).await.unwrap().host, v6);
        Manual.destroy_instance(&instance.id).await.unwrap();
        // Nothing was destroyed: it is still reported as running.
        assert_eq!(
            Manual
                .instance_status(&instance.id)
                .await
                .unwrap()
                .address(),
            Some(v6)
        );
        let tag = Name::parse("kokoa").unwrap();
        assert_eq!(Manual.list_instances(&tag).await.unwrap(), []);
    }

    #[tokio::test]
    async fn needs_an_address() {
        let err = Manual.create_instance(&config(None)).await.unwrap_err();
        assert!(err.to_string().contains("public address"), "{err}");
        let err = Manual
            .instance_status(&InstanceId::parse("edge-1").unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid instance id \"edge-1\": a manual instance's id is its IP address"
        );
    }
}

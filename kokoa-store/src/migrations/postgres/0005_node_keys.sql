-- Schema version 5: WireGuard private keys never leave the node that uses them. Each node
-- makes its own key pair and registers the public half; the control plane keeps public
-- keys only, one per edge (every interface of an edge uses it) and one per origin.
--
-- The key pairs the control plane made before are dropped with their private halves: each
-- node registers a key of its own at its first start after the upgrade, and its tunnels
-- come back with it. A rotation in progress held such a key and is dropped with it.

ALTER TABLE edge_tunnels DROP COLUMN public_key;
ALTER TABLE edge_tunnels DROP COLUMN private_key_encrypted;
ALTER TABLE origins DROP COLUMN wireguard_private_key_encrypted;
ALTER TABLE origins DROP COLUMN wireguard_public_key;
ALTER TABLE origins ADD COLUMN wireguard_public_key TEXT;
ALTER TABLE edge_nodes ADD COLUMN wireguard_public_key TEXT;
DELETE FROM shared_values WHERE namespace = 'key_rotation';

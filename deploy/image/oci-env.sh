# Sourced by the image scripts: one private containers-storage for askdb (vfs driver, root under
# /var/tmp) so parallel builds on a shared machine never touch each other's or the system's store.
# Override ASKDB_OCI_ROOT to keep several stores apart.
ASKDB_OCI_ROOT="${ASKDB_OCI_ROOT:-/var/tmp/askdb-oci}"
mkdir -p "$ASKDB_OCI_ROOT"/{storage,run,tmp}
cat >"$ASKDB_OCI_ROOT/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$ASKDB_OCI_ROOT/storage"
runroot = "$ASKDB_OCI_ROOT/run"
CONF
# buildah (run by `bentoml containerize`) and podman both read this file.
export CONTAINERS_STORAGE_CONF="$ASKDB_OCI_ROOT/storage.conf"
# podman's global flags as ENVIRONMENT.md found working: crun fails on hybrid cgroups, so runc.
PODMAN=(podman --storage-driver vfs --root "$ASKDB_OCI_ROOT/storage" --runroot "$ASKDB_OCI_ROOT/run"
  --tmpdir "$ASKDB_OCI_ROOT/tmp" --runtime runc --cgroup-manager=cgroupfs)

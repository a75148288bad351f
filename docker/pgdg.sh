#!/usr/bin/env bash
# Adds the PostgreSQL project's apt repository (apt.postgresql.org) for this distribution, so that
# postgresql-15 installs on Ubuntu 24.04 (the CUDA images' base), and turns off the packages' default cluster.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg lsb-release postgresql-common >/dev/null
# postgresql-common ships the PGDG setup script; -y: no questions
/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
apt-get update -qq

"""Build the cloud-docs example corpus (BEIR layout) from the documents and queries written in this file.

Usage (from the repository root):

    python examples/cloud-docs/build.py

rewrites `corpus.jsonl`, `queries.jsonl` and `qrels/{train,test}.tsv` next to this file. The output is
deterministic (ids follow the order below), so a rebuild without edits leaves the files byte-identical
and the downstream stages stay up to date.

Everything here was written for the hnm project about a fictional provider, Nimbus Cloud. Prices,
limits, dates and product names are invented: they only have to be consistent inside the corpus, so
that look-alike documents differ in the one fact a query asks about.

The documents come in look-alike families (`family(...)` below): documents that share most of their
vocabulary but answer different questions (managed vs self-hosted, VCN vs VNIC, block vs object vs
file storage, API v1 vs v2, one region vs another, one pricing tier vs another). Queries name their
relevant documents by slug; the build checks the rules the README promises (word counts, family sizes,
every family in both splits) and refuses to write anything if one fails.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

MIN_WORDS, MAX_WORDS = 60, 150
MIN_FAMILY, MAX_FAMILY = 3, 6


@dataclass(frozen=True)
class Document:
    family: str
    slug: str
    title: str
    text: str


FAMILIES: dict[str, str] = {}  # family key -> what tells its members apart
DOCUMENTS: list[Document] = []


def family(key: str, about: str, *docs: tuple[str, str, str]) -> None:
    """Register a look-alike family; `docs` are (slug, title, text) with free line wrapping in text."""
    FAMILIES[key] = about
    for slug, title, text in docs:
        DOCUMENTS.append(Document(key, slug, title, " ".join(text.split())))


# =============================================================================================
# Databases: managed vs self-hosted
# =============================================================================================

family(
    "mysql",
    "MySQL: managed DB system vs self-hosted on an instance (create, backup, HA, migration)",
    (
        "mysql-managed-create",
        "Create a MySQL DB system on Nimbus Database for MySQL",
        """Nimbus Database for MySQL runs MySQL Enterprise Edition as a managed service: Nimbus patches
        the server, takes the backups and replaces failed hardware. To create a DB system: 1. Open
        Databases > MySQL > DB systems and click Create DB system. 2. Pick Standalone, High availability
        or HeatWave. 3. Enter the administrator user name and password; the name root is reserved.
        4. Choose a VCN and a private subnet, a shape such as MySQL.4 or MySQL.16, and between 50 GB and
        128 TB of storage. 5. Click Create. Provisioning takes about ten minutes. The DB system only gets
        a private endpoint; connect from an instance or a bastion session in the same VCN on port 3306
        (classic protocol) or 33060 (X Protocol).""",
    ),
    (
        "mysql-selfhosted-install",
        "Install MySQL Community Server on a compute instance",
        """If you need a MySQL version, plugin or setting that the managed service does not offer, you can
        run MySQL yourself on a compute instance. On Nimbus Linux 9: 1. sudo dnf install mysql-server.
        2. sudo systemctl enable --now mysqld. 3. Run mysql_secure_installation to set the root password.
        4. Open port 3306 in firewalld and add an ingress rule to the subnet's security list or to the
        instance's network security group. Put the data directory on a separate block volume so that you
        can resize it and back it up independently of the boot volume. With a self-managed server you are
        responsible for patching, backups, replication and failover; Nimbus only manages the host.""",
    ),
    (
        "mysql-managed-backup",
        "Automatic backups and point-in-time recovery for MySQL DB systems",
        """Every MySQL DB system is backed up automatically once a day during its backup window. Automatic
        backups are kept for 1 to 35 days (7 by default) and are deleted together with the DB system
        unless you select Retain automatic backups. Manual backups are kept until you delete them.
        Point-in-time recovery is on by default and lets you restore to any second within the retention
        period, because Nimbus copies the binary logs to Object Storage every five minutes. A restore
        always creates a new DB system; it never overwrites the existing one. Backups stay in the same
        region unless you enable cross-region backup copy.""",
    ),
    (
        "mysql-selfhosted-backup",
        "Back up a self-managed MySQL server running on an instance",
        """Nimbus does not back up databases that you install yourself. For MySQL on a compute instance,
        combine a logical or physical backup with storage backups: 1. Use mysqldump --single-transaction
        for small databases, or Percona XtraBackup for large InnoDB datasets. 2. Write the output to a
        block volume or upload it to an Object Storage bucket with nimbus os object put. 3. If you rely on
        block volume backups alone, run FLUSH TABLES WITH READ LOCK first or stop mysqld: volume backups
        are crash-consistent, not application-consistent. 4. Test restores regularly on a separate
        instance. To recover to a point in time, keep the binary logs and replay them with mysqlbinlog.""",
    ),
    (
        "mysql-migrate-onprem",
        "Migrate an on-premises MySQL database to Nimbus Database for MySQL",
        """To move a MySQL 5.7 or 8.0 database from your data centre to a managed DB system: 1. Run MySQL
        Shell's upgrade checker against the source. 2. Dump the instance with util.dumpInstance() and the
        compatibility options strip_definers and force_innodb, writing to an Object Storage bucket. 3.
        Create the DB system and load the dump with util.loadDump(). 4. For a short cutover, create an
        inbound replication channel from the on-premises source, let it catch up, stop writes on the
        source and switch the applications. The source must use GTIDs and row-based binary logging and
        must be reachable from the VCN over site-to-site VPN or FastConnect.""",
    ),
    (
        "mysql-managed-ha",
        "High availability for MySQL DB systems",
        """A high availability DB system runs three MySQL instances in different availability zones (fault
        domains in single-zone regions) using Group Replication. One instance is the primary and accepts
        writes, and the endpoint always points to it. If the primary fails, Nimbus promotes a secondary,
        usually in under a minute, and the endpoint IP address does not change; applications only need to
        reconnect. You can switch an existing DB system between standalone and high availability, which
        restarts the server. HA requires a primary key on every table. Read replicas are separate: they
        serve read-only traffic through their own endpoint and never take part in failover.""",
    ),
)

family(
    "postgresql",
    "PostgreSQL: managed clusters vs self-hosted (create, upgrade, extensions, connection limits)",
    (
        "pg-managed-create",
        "Create a Nimbus Database for PostgreSQL cluster",
        """Nimbus Database for PostgreSQL is a managed service: the storage layer is replicated across
        availability zones and Nimbus handles patching, backups and failover. To create a database
        cluster: 1. Go to Databases > PostgreSQL and click Create database cluster. 2. Choose the
        PostgreSQL version (14, 15 or 16) and the node count: one primary plus up to three read replicas.
        3. Pick a flexible shape and a private subnet. 4. Set the administrator user name; the postgres
        superuser is not available to customers. 5. Click Create. You get a primary endpoint for
        read-write traffic and a reader endpoint that balances connections across the replicas.""",
    ),
    (
        "pg-selfhosted-install",
        "Run PostgreSQL yourself on a compute instance",
        """Running PostgreSQL on your own instance gives you the superuser, any extension and any version,
        in exchange for operating it yourself. On Ubuntu 22.04: 1. Install postgresql-16 from the PGDG
        apt repository. 2. In postgresql.conf set listen_addresses to the instance's private IP. 3. Add
        the client CIDR to pg_hba.conf with scram-sha-256. 4. Open TCP 5432 in the network security
        group. Keep PGDATA on a block volume at the Balanced or Higher Performance level; the boot volume
        is too slow for write-heavy databases. High availability, WAL archiving and backups are up to
        you, for example with Patroni and pgBackRest.""",
    ),
    (
        "pg-managed-upgrade",
        "Upgrade the major version of a managed PostgreSQL cluster",
        """Nimbus applies minor version updates, such as 15.6 to 15.7, automatically in the maintenance
        window. Major version upgrades are started by you: open the cluster, choose More actions >
        Upgrade major version and pick the target. Nimbus takes a backup, runs pg_upgrade on the primary
        and then rebuilds the replicas. Expect 10 to 30 minutes of downtime, which depends on the number
        of database objects rather than on data size. Extensions that do not exist for the target version
        block the upgrade, and the precheck lists them. There is no rollback in place: restore the
        pre-upgrade backup to a new cluster instead.""",
    ),
    (
        "pg-selfhosted-upgrade",
        "Major version upgrade of self-managed PostgreSQL with pg_upgrade",
        """On an instance where you installed PostgreSQL yourself, upgrade from 14 to 16 like this: 1.
        Install the postgresql-16 packages next to 14. 2. Stop the cluster and take a backup of the data
        block volume. 3. Run pg_upgrade --check with the old and new bindir and datadir. 4. Run
        pg_upgrade --link, which hard-links data files instead of copying them; it takes minutes even for
        large databases, but the old cluster cannot be started afterwards. 5. Start 16 and run vacuumdb
        --all --analyze-in-stages. Standby servers must be rebuilt or upgraded with rsync. The managed
        service does all of this from the console.""",
    ),
    (
        "pg-managed-extensions",
        "Supported extensions on Nimbus Database for PostgreSQL",
        """Managed PostgreSQL clusters allow a fixed list of extensions, enabled per database with CREATE
        EXTENSION by a user with the nimbus_admin role. The list includes pg_stat_statements, pgcrypto,
        postgis, pgvector, pg_trgm, hstore, uuid-ossp and pg_partman. You cannot install extensions that
        are not on the list, untrusted procedural languages such as plpython3u, or anything that needs
        access to the file system, because customers never get the superuser role. If you need such an
        extension, run PostgreSQL on a compute instance instead. pgvector is available from version 15;
        indexes on vectors with more than 2,000 dimensions are not supported.""",
    ),
    (
        "pg-managed-connections",
        "Troubleshoot 'remaining connection slots are reserved' on managed PostgreSQL",
        """The error FATAL: remaining connection slots are reserved for non-replication superuser
        connections means the cluster has reached max_connections. On Nimbus Database for PostgreSQL,
        max_connections is derived from the shape's memory, about 100 per 8 GB and at most 5,000, and
        cannot be raised above that in the configuration. Check the ConnectionsInUse metric, look for
        idle sessions in pg_stat_activity and terminate leaked ones. The lasting fix is pooling: enable
        the built-in PgBouncer on the Connection pooling tab (transaction mode, port 6432) or pool in the
        application. A shape with more memory also raises the limit.""",
    ),
)

family(
    "kubernetes",
    "Kubernetes: managed NKE vs self-managed kubeadm clusters (create, upgrade, virtual nodes, access)",
    (
        "nke-create",
        "Create a Kubernetes cluster with Nimbus Kubernetes Engine (NKE)",
        """NKE runs the Kubernetes control plane for you: the API server, etcd and the scheduler are
        managed, patched and replicated by Nimbus, and you only pay for the worker nodes. Quick create
        builds everything in one step: 1. Open Developer services > Kubernetes clusters and click Create
        cluster. 2. Choose Quick create, a Kubernetes version and a public or private API endpoint. 3.
        Pick a node shape and the number of nodes, three by default, spread across availability zones.
        4. Click Create. Quick create also makes a VCN with the subnets, gateways and security rules the
        cluster needs; Custom create uses an existing VCN. Download the kubeconfig with nimbus nke cluster
        create-kubeconfig.""",
    ),
    (
        "k8s-kubeadm",
        "Install a self-managed Kubernetes cluster on compute instances with kubeadm",
        """Some teams run Kubernetes on plain instances to control every component version and flag. A
        minimal setup: 1. Launch three instances for the control plane and any number of workers in a
        private subnet. 2. Install containerd, kubeadm, kubelet and kubectl, and disable swap. 3. Put a
        network load balancer in front of port 6443 of the control plane nodes. 4. Run kubeadm init
        --control-plane-endpoint with the load balancer address, then join the other nodes. 5. Install a
        CNI plugin such as Calico. You are responsible for etcd backups, certificate rotation (kubeadm
        certificates expire after one year) and upgrades; NKE does these for you.""",
    ),
    (
        "nke-upgrade",
        "Upgrade an NKE cluster to a newer Kubernetes version",
        """Upgrading an NKE cluster has two parts. First upgrade the control plane: open the cluster, click
        Upgrade available and choose the next minor version; the API server stays reachable and workloads
        keep running. Then upgrade each node pool: edit the pool, set the new version and cycle the nodes.
        Node cycling replaces nodes one at a time, or with the maximum surge you set, cordoning and
        draining each first so that PodDisruptionBudgets are respected. Nodes may be at most two minor
        versions behind the control plane. The control plane cannot skip a minor version, so going from
        1.28 to 1.30 takes two upgrades.""",
    ),
    (
        "k8s-kubeadm-upgrade",
        "Upgrade a self-managed kubeadm cluster",
        """For a cluster you built yourself with kubeadm on Nimbus instances, upgrade one minor version at a
        time: 1. On the first control plane node, upgrade the kubeadm package, then run kubeadm upgrade
        plan and kubeadm upgrade apply v1.30.x. 2. On the other control plane nodes run kubeadm upgrade
        node. 3. Upgrade kubelet and kubectl on each control plane node and restart kubelet. 4. For each
        worker: kubectl drain, upgrade the packages, kubeadm upgrade node, restart kubelet, kubectl
        uncordon. Take an etcd snapshot before you start. If you would rather not do this by hand, NKE
        upgrades a managed control plane from the console.""",
    ),
    (
        "nke-virtual-nodes",
        "Virtual nodes in NKE",
        """Virtual nodes give an NKE cluster serverless capacity: pods scheduled on a virtual node pool run
        on Nimbus-managed infrastructure and you are billed per pod for the OCPUs and memory it requests,
        with no worker instances to patch or scale. Restrictions apply: DaemonSets, privileged
        containers, hostPath volumes and hostNetwork are not supported, and each pod gets its own VNIC
        from the pod subnet, so size that subnet for the number of pods. Only the VCN-native pod
        networking CNI is supported. Virtual node pools need an enhanced cluster; basic clusters can only
        use managed node pools.""",
    ),
    (
        "nke-unauthorized",
        "kubectl error 'You must be logged in to the server (Unauthorized)' on NKE",
        """NKE kubeconfig files do not contain a static token. kubectl runs nimbus nke cluster
        generate-token to get a short-lived token each time, so the message error: You must be logged in
        to the server (Unauthorized) usually means that call failed. Check that the Nimbus CLI is
        installed and on the PATH that kubectl uses, that the profile named in the kubeconfig exists in
        your CLI configuration, and that its API key is still valid. Then check IAM: your group needs a
        policy such as Allow group devs to use clusters in compartment apps. Inside the cluster,
        Kubernetes RBAC still applies on top of IAM.""",
    ),
)

family(
    "kafka",
    "Event streaming: serverless Streaming (Kafka-compatible) vs Managed Kafka vs self-hosted Kafka",
    (
        "streaming-overview",
        "Nimbus Streaming concepts: streams, partitions and retention",
        """Nimbus Streaming is a serverless, Kafka-compatible event service. You create a stream, the
        equivalent of a Kafka topic, inside a stream pool, choose the number of partitions, and produce
        and consume with the Streaming API or any Kafka client. There are no brokers to size. Each
        partition accepts up to 1 MB per second or 1,000 messages per second of writes and 2 MB per second
        of reads, and a message is at most 1 MB. Retention is set when the stream is created, between 24
        hours and 7 days, and cannot be changed later. Log compaction, transactions and Kafka Connect are
        not supported; use Managed Kafka for those.""",
    ),
    (
        "kafka-managed",
        "Create a Nimbus Managed Kafka cluster",
        """Nimbus Managed Kafka runs real Apache Kafka brokers that Nimbus provisions, patches and monitors,
        while you keep the full Kafka feature set: log compaction, transactions, exactly-once semantics,
        Kafka Connect and unlimited retention. To create a cluster: 1. Open Analytics > Managed Kafka and
        click Create cluster. 2. Pick the Kafka version (3.6 or 3.7, KRaft mode), the broker shape and 3
        to 30 brokers. 3. Choose block storage per broker, up to 16 TB. 4. Select a private subnet and the
        authentication method, SASL/SCRAM or mutual TLS. Clients connect to the bootstrap servers listed
        on the cluster page. Brokers are spread across availability zones.""",
    ),
    (
        "kafka-selfhosted",
        "Run Apache Kafka yourself on compute instances",
        """You can install Apache Kafka on instances when you need a custom build, plugins that the managed
        service does not allow, or a version it does not offer yet. Use at least three instances in
        different availability zones, put each broker's log.dirs on its own block volume, and run KRaft
        controllers instead of ZooKeeper for Kafka 3.5 and later. Set advertised.listeners to a private IP
        or DNS name that clients can reach, and open ports 9092 for clients and 9093 for controllers in
        the network security group. Broker upgrades, partition rebalancing after adding brokers,
        certificate rotation and disk growth are your job; Nimbus only manages the instances.""",
    ),
    (
        "streaming-kafka-client",
        "Connect a Kafka client to Nimbus Streaming",
        """Streaming accepts the Kafka protocol on port 9092 of the stream pool's endpoint, for example
        cell-1.streaming.eu-central-1.nimbuscloud.com:9092. Configure the client with
        security.protocol=SASL_SSL and sasl.mechanism=PLAIN. The user name has three parts separated by
        slashes: tenancy name, user name and stream pool ID. The password is an auth token of that user,
        not the console password and not an API key. Use the stream name as the Kafka topic. If the client
        fails with SaslAuthenticationException: Authentication failed, create a new auth token and check
        that the user's group may use stream-push and stream-pull in the compartment.""",
    ),
    (
        "kafka-managed-limits",
        "Managed Kafka limits and scaling",
        """A Managed Kafka cluster has between 3 and 30 brokers, and Nimbus recommends at most 4,000
        partitions per broker, replicas included. Broker storage can be increased online in 1 GB steps up
        to 16 TB but never decreased. Adding brokers does not move existing partitions: run the rebalance
        operation from the console or use kafka-reassign-partitions. Each tenancy can create 5 clusters
        per region by default; request a limit increase for more. Changing the broker shape replaces
        brokers one at a time, so producers should use acks=all and topics a replication factor of 3 to
        avoid data loss during the rolling change.""",
    ),
)

family(
    "cache",
    "Redis: managed Nimbus Cache vs Redis installed on an instance (create, memory, connectivity)",
    (
        "cache-managed-create",
        "Create a Nimbus Cache cluster (Redis-compatible)",
        """Nimbus Cache is a managed, Redis-compatible in-memory store. Create a cluster under Databases >
        Cache: choose non-sharded (one primary and up to four replicas) or sharded (up to 10 shards), the
        memory per node from 2 GB to 500 GB, and a private subnet. Nimbus handles failover, patching and
        engine tuning. TLS is always on and clients must use TLS on port 6379; there is no plaintext port.
        Commands that could affect the service, such as CONFIG, DEBUG, MODULE and SAVE, are disabled.
        Data lives in memory only: Nimbus Cache supports neither RDB snapshots nor AOF persistence, so
        treat it as a cache, not as a database.""",
    ),
    (
        "redis-selfhosted",
        "Install Redis on your own instance",
        """When you need Redis modules, persistence to disk or commands that Nimbus Cache disables, install
        Redis on a compute instance. On Nimbus Linux run sudo dnf install redis, then edit
        /etc/redis/redis.conf: bind to the private IP, set requirepass or ACL users, and set appendonly
        yes if you want AOF persistence. Set maxmemory to about 75% of the instance memory and choose an
        eviction policy. Open port 6379 only to the application subnet in a network security group. For
        failover, run three instances with Redis Sentinel. Nimbus does not patch, monitor or fail over a
        Redis server that you install.""",
    ),
    (
        "cache-eviction",
        "Troubleshoot OOM errors and evictions in Nimbus Cache",
        """The error OOM command not allowed when used memory > 'maxmemory' means the node is full and the
        eviction policy is noeviction. In Nimbus Cache the policy is set in the cluster's configuration
        set: change it to allkeys-lru or volatile-lru to let the engine remove keys instead of rejecting
        writes. Watch the MemoryUtilization and EvictedKeys metrics. If the working set really does not
        fit, scale up the node memory, which causes a few seconds of failover, or move to a sharded
        cluster. Keys without a TTL are never removed by the volatile policies, a common reason why
        memory keeps growing.""",
    ),
    (
        "cache-connect-troubleshoot",
        "Cannot connect to Nimbus Cache: connection reset or timeout",
        """Connection failures to a Nimbus Cache cluster usually have one of three causes. 1. No TLS:
        redis-cli without --tls gets a connection reset, because the cluster only accepts TLS on port
        6379. 2. Network: the client must run in the same VCN, a peered VCN or over VPN, since clusters
        have no public endpoint, and the network security group must allow TCP 6379 from the client. 3.
        Cluster mode: sharded clusters need a cluster-aware client; a plain client gets MOVED errors. Use
        the discovery endpoint on the cluster page rather than individual node addresses, so that
        failover is transparent.""",
    ),
)

# =============================================================================================
# Networking and security: confusable acronyms
# =============================================================================================

family(
    "vcn-vnic",
    "VCN vs VNIC vs subnet: the network, the interface card, and the pieces in between",
    (
        "vcn-overview",
        "Virtual cloud networks (VCN)",
        """A virtual cloud network (VCN) is a private, software-defined network that you create in one
        Nimbus region. It spans all availability zones of the region. When you create a VCN you give it
        one or more IPv4 CIDR blocks between /16 and /30, for example 10.0.0.0/16, and optionally an IPv6
        prefix. Inside it you create subnets, route tables, security lists and gateways. A VCN is isolated
        from other VCNs unless you peer them through a local peering gateway or a dynamic routing
        gateway. By default a tenancy can have 50 VCNs per region. The VCN itself is free; you pay for
        some gateways and for traffic that leaves the region.""",
    ),
    (
        "vnic-overview",
        "Virtual network interface cards (VNIC)",
        """A VNIC (virtual network interface card) connects an instance to a subnet and determines how the
        instance talks to other hosts. Every instance has a primary VNIC, created at launch, which cannot
        be detached. A VNIC has one primary private IP address, up to 31 secondary private IPs,
        optionally a public IP, a MAC address, a hostname in the subnet's DNS domain and up to five
        network security groups. A VNIC lives in one availability zone, the same as its instance, and
        terminating the instance deletes its VNICs. How many VNICs an instance can have depends on its
        shape, usually one per OCPU and at most 24.""",
    ),
    (
        "vnic-secondary",
        "Attach a secondary VNIC to an instance",
        """Attach a secondary VNIC when an instance needs to be in two subnets, for example a management
        subnet and an application subnet, or in two VCNs in the same availability zone. 1. Open the
        instance, go to Attached VNICs and click Create VNIC. 2. Choose the VCN and subnet and optionally
        a private IP. 3. Click Save. On Linux the new interface is not configured automatically: run the
        nimbus-network-config script or add a NetworkManager connection with policy routing, otherwise
        replies leave through the primary interface and are dropped. Windows configures secondary VNICs
        through DHCP. The maximum number of VNICs depends on the shape.""",
    ),
    (
        "vcn-cidr",
        "Add CIDR blocks to a VCN",
        """You can add up to five IPv4 CIDR blocks to an existing VCN, for example to extend a 10.0.0.0/16
        network that has no room left for new subnets. Open the VCN, click Add CIDR block and enter a
        range that overlaps neither the existing blocks nor the address spaces of peered networks. Ranges
        inside 100.64.0.0/10 and the link-local 169.254.0.0/16 are not allowed. A CIDR block can only be
        removed if no subnet uses addresses from it. Adding a block does not change routing elsewhere:
        update the routes that your on-premises network learns over VPN or FastConnect yourself.""",
    ),
    (
        "subnet-regional",
        "Regional and zonal subnets, public and private",
        """Subnets divide a VCN. A regional subnet, the recommended kind, can hold resources in any
        availability zone of the region; a zonal subnet is tied to one zone and remains for older
        configurations. A subnet is either public or private, fixed at creation: VNICs in a private
        subnet can never get a public IP address, even if the route table points to an internet gateway.
        Each subnet has one route table, up to five security lists and a DHCP options set. Nimbus reserves
        the first two and the last IP address of every subnet, so a /24 gives 253 usable addresses.
        Subnet CIDRs cannot overlap within a VCN.""",
    ),
    (
        "vnic-skip-sd",
        "Skip source/destination check for NAT and firewall instances",
        """By default a VNIC drops packets whose source or destination is not one of its own IP addresses.
        That protects against spoofing but breaks instances that forward traffic, such as a self-managed
        NAT instance, a VPN appliance or a third-party firewall. To let an instance route, open its VNIC
        and enable Skip source/destination check, then use the instance's private IP as the target of a
        route rule in the subnet's route table. The setting is per VNIC, not per VCN or subnet, so an
        appliance with two VNICs needs it on both. For plain outbound internet access from private
        subnets a NAT gateway is simpler than a NAT instance.""",
    ),
)

family(
    "firewalls",
    "WAF vs Network Firewall vs security lists vs network security groups, and what blocked my traffic",
    (
        "waf-overview",
        "Web Application Firewall (WAF) overview",
        """Nimbus WAF protects HTTP and HTTPS applications at layer 7. You create a WAF policy with
        protection rules (the managed OWASP Top 10 rule set against SQL injection and cross-site
        scripting, protocol checks, bot management), access control rules that match on paths, headers,
        countries or IP lists, and rate limiting rules. Then you attach the policy to a flexible load
        balancer; WAF cannot be attached to a network load balancer, a subnet or an instance directly.
        The first 10 million requests a month are free. WAF does not inspect non-HTTP traffic such as
        SSH, database connections or UDP; use security lists, network security groups or Network Firewall
        for that.""",
    ),
    (
        "netfw",
        "Nimbus Network Firewall",
        """Network Firewall is a managed, stateful next-generation firewall for traffic inside a VCN and at
        its edge. It inspects layers 3 to 7 for all protocols, with intrusion detection and prevention
        (IDPS), URL filtering by domain and TLS inspection using your certificates. You deploy it into its
        own subnet and change route tables so that traffic passes through it, for example on the ingress
        route table of the internet gateway, or between spoke VCNs attached to a DRG. Each firewall
        handles up to 4 Gbps and is billed per hour plus per GB processed. Use it when security rules are
        not enough, such as for inspecting east-west traffic between subnets.""",
    ),
    (
        "security-lists",
        "Security lists",
        """A security list is a set of ingress and egress rules that applies to every VNIC in the subnets it
        is associated with. Rules match on source or destination CIDR, protocol and port. Rules are
        stateful by default, so return traffic of an allowed connection is allowed automatically;
        stateless rules need a matching rule in the other direction and suit very high connection rates.
        A subnet can have up to five security lists, each with up to 200 ingress and 200 egress rules. The
        default security list of a new VCN allows SSH from anywhere and ICMP path MTU messages. Security
        lists work at layers 3 and 4 only and never look at HTTP.""",
    ),
    (
        "nsg",
        "Network security groups (NSG)",
        """A network security group is a set of stateful or stateless rules that applies to the VNICs you
        add to the group, rather than to a whole subnet. A rule can use another NSG as its source or
        destination, so you can allow the app tier to reach the database tier on TCP 3306 without
        knowing any IP addresses. A VNIC can be in up to five NSGs, and an NSG can have up to 120 rules.
        NSGs and security lists work together: a packet is allowed if any security list of the subnet or
        any NSG of the VNIC allows it. Databases, load balancers and NKE nodes accept NSGs too. Prefer
        NSGs when instances in one subnet need different rules.""",
    ),
    (
        "waf-403",
        "Requests blocked by WAF with HTTP 403",
        """If users get 403 Forbidden on a page that shows a request ID, a WAF rule blocked the request.
        Open the logs of the WAF policy (enable them in Logging first) and search for the request ID to
        see which rule matched, for example rule 941100 for a cross-site scripting pattern in a query
        parameter. To fix a false positive, add an exclusion for that parameter or cookie to the rule
        instead of disabling the whole rule set, or switch the rule's action from Block to Detect while
        you investigate. A 403 without a WAF request ID came from your application or from the load
        balancer's own rules, not from WAF.""",
    ),
    (
        "connect-timeout-port",
        "Connection to an application port on an instance times out",
        """When a client reaches an instance's IP address but a connection to an application port times out,
        with no refusal, something is dropping the packets. Check, in this order: 1. the route tables of
        the client's and the instance's subnets, including a route to an internet gateway for public
        access; 2. the security lists of the instance's subnet and the network security groups of its
        VNIC, which must allow the port for ingress; 3. the operating system firewall, since firewalld on
        Nimbus Linux images only allows SSH by default; 4. that the service listens on 0.0.0.0 rather
        than 127.0.0.1. Connection refused instead means packets arrive but nothing listens.""",
    ),
)

family(
    "iam",
    "IAM policy vs IAM role vs dynamic group vs group/compartment, and the 404 they cause",
    (
        "iam-policy",
        "IAM policies: syntax and examples",
        """An IAM policy is a document of statements that grant permissions; nothing is allowed unless a
        policy allows it. Each statement reads Allow <subject> to <verb> <resource-type> in <location>,
        optionally followed by where and conditions. Subjects are groups, dynamic groups or any-user.
        The verbs are inspect, read, use and manage, each including the previous one. Examples: Allow
        group netadmins to manage virtual-network-family in compartment network. Allow group devs to read
        objects in compartment apps where target.bucket.name = 'logs'. A policy attached to a compartment
        can only grant access to that compartment and its children. A tenancy can have 100 policies of up
        to 50 statements each.""",
    ),
    (
        "iam-roles",
        "IAM roles and cross-tenancy access",
        """An IAM role is an identity that users or services assume temporarily instead of having
        permanent group membership. Use roles for federation, where users from your identity provider
        assume a role after SAML or OIDC sign-in, and for cross-tenancy access, where users of a partner
        company assume a role defined in your tenancy. A role has a trust policy that says who may assume
        it and permission policies that say what it can do. Sessions last one hour by default and up to
        12 hours. In the CLI, run nimbus iam role assume --role-name. Unlike a group, a role must be
        assumed actively, and its permissions replace the user's own for that session.""",
    ),
    (
        "iam-dynamic-groups",
        "Dynamic groups and instance principals",
        """A dynamic group lets compute instances, functions and other resources call Nimbus APIs without
        stored credentials. Instead of members, a dynamic group has matching rules, such as all instances
        in a given compartment, or any resource of type fnfunc. Matching resources receive short-lived
        certificates from the instance metadata service, known as instance principals or resource
        principals. You then write an ordinary policy with the dynamic group as the subject: Allow
        dynamic-group app-servers to read secret-family in compartment apps. Users cannot be added to a
        dynamic group, and a dynamic group cannot assume roles. Rule changes can take up to 60 seconds to
        apply.""",
    ),
    (
        "iam-users-groups",
        "Users, groups and compartments",
        """Users are people or applications that sign in to Nimbus Cloud. Users get permissions only through
        groups: add the user to a group, then write policies for the group. A user can be in up to 100
        groups. Compartments organise resources, not people: every resource belongs to exactly one
        compartment, and policies are scoped to compartments. Compartments can be nested six levels deep.
        The Administrators group in the root compartment can manage everything and cannot be deleted. For
        automation, create a user without a console password and give it API signing keys, or better, run
        the automation on an instance that belongs to a dynamic group.""",
    ),
    (
        "iam-notauthorized",
        "Error 404 NotAuthorizedOrNotFound",
        """Nimbus APIs return 404 NotAuthorizedOrNotFound when the resource does not exist or when the
        caller may not see it; the two cases are deliberately indistinguishable so that nobody can probe
        for resources. Check: 1. The resource ID and the region: an ID from eu-central-1 does not exist in
        na-east-1. 2. The compartment: a policy for compartment apps does not cover a resource in
        compartment apps-dev unless apps-dev is its child. 3. The verb: listing needs inspect, reading
        content needs read. 4. For instance principals, that the instance matches a dynamic group rule.
        Quote the nimbus-request-id response header if you open a support request.""",
    ),
)

family(
    "credentials",
    "API signing keys vs auth tokens vs customer secret keys vs SMTP credentials: which secret goes where",
    (
        "cred-api-keys",
        "API signing keys",
        """API signing keys are RSA key pairs that the CLI, the SDKs and Terraform use to sign every request
        to the Nimbus API. Generate a 2048-bit key with nimbus setup keys or openssl, upload the public
        key in PEM format under your user's API keys, and keep the private key on your machine. The
        console shows the key's fingerprint, which goes into the CLI configuration together with the user
        ID, tenancy ID and region. A user can have at most three API keys, which allows rotation without
        downtime: add the new key, update the clients, delete the old key. API keys cannot be used to
        sign in to the console, Docker or Kafka clients.""",
    ),
    (
        "cred-auth-tokens",
        "Auth tokens",
        """An auth token is a generated password for third-party APIs that do not support Nimbus request
        signing. Use it as the password when you run docker login for Nimbus Container Registry, when
        Kafka clients connect to Nimbus Streaming, or with Swift clients for Object Storage. Create one
        under your user's Auth tokens; the token is shown only once, so copy it immediately. Each user can
        have two auth tokens. Tokens do not expire unless your administrator sets an expiry in the
        password policy, and a deleted token stops working within a few minutes. The Nimbus CLI and SDKs
        do not accept auth tokens; they need API signing keys.""",
    ),
    (
        "cred-customer-secret",
        "Customer secret keys for the S3-compatible API",
        """Customer secret keys are an access key and secret key pair for the Amazon S3 compatibility API of
        Object Storage. Tools such as the AWS CLI, rclone, s3cmd or backup software use them with the
        endpoint https://<namespace>.compat.objectstorage.<region>.nimbuscloud.com. Create the pair under
        your user's Customer secret keys; the secret is displayed only once. A user can have two pairs.
        Requests signed with the keys have the permissions of the user, so the user needs a policy to
        manage objects in the target compartment. Buckets created through the S3 API go to the
        compartment set as the S3 default in the tenancy settings, the root compartment unless changed.""",
    ),
    (
        "cred-smtp",
        "SMTP credentials for Email Delivery",
        """Applications that send mail through Nimbus Email Delivery authenticate to the SMTP endpoint, for
        example smtp.email.eu-central-1.nimbuscloud.com on port 587 with STARTTLS, using SMTP
        credentials: a user name and password generated under the user's SMTP credentials. They are
        different from the console password, auth tokens and API keys, and a user can have two sets. The
        sender address must also be registered as an approved sender, and for good deliverability you
        should publish SPF and DKIM records for your domain. The reply 535 Authentication credentials
        invalid usually means an auth token or the console password was used instead of the SMTP
        password.""",
    ),
)

family(
    "gateways",
    "Internet gateway vs NAT gateway vs service gateway vs DRG vs local peering gateway",
    (
        "igw",
        "Internet gateway",
        """An internet gateway gives resources in public subnets a path to and from the internet. Create one
        in the VCN (a VCN has at most one), then add the route rule 0.0.0.0/0 to the internet gateway in
        the public subnet's route table. Instances also need a public IP address and security rules that
        allow the traffic. Internet gateways are free and scale automatically. Resources in private
        subnets cannot use an internet gateway even if a route points to it, because they have no public
        IP; give them a NAT gateway for outbound access. Disabling the gateway blocks internet traffic at
        once without deleting any routes.""",
    ),
    (
        "natgw",
        "NAT gateway",
        """A NAT gateway lets instances in private subnets open outbound connections to the internet, for
        example to download packages and updates, while nothing on the internet can open a connection to
        them. Create the gateway in the VCN, then add the route rule 0.0.0.0/0 to the NAT gateway in the
        private subnet's route table. All traffic leaves from the gateway's public IP, which you can take
        from a reserved IP so that partners can allow-list it. A NAT gateway costs a small hourly fee plus
        data processing per GB. It is not the cheap path to Nimbus services such as Object Storage; use a
        service gateway for those.""",
    ),
    (
        "sgw",
        "Service gateway",
        """A service gateway gives private subnets access to Nimbus services such as Object Storage, the OS
        package mirrors and the monitoring endpoints over the Nimbus backbone, without an internet or NAT
        gateway and without public IPs. In the route rule, the destination is not a CIDR but a service
        label: either All <region> services in Nimbus Services Network, or Object Storage in <region>.
        Traffic through a service gateway is free. It only reaches services in the same region; a bucket
        in another region still needs a NAT or internet gateway. Bucket policies can limit access to
        requests that come through a particular VCN's service gateway.""",
    ),
    (
        "drg",
        "Dynamic routing gateway (DRG)",
        """A dynamic routing gateway (DRG) is a virtual router that connects VCNs to networks outside them:
        on-premises networks over site-to-site VPN or FastConnect, other VCNs in the same region, and VCNs
        in other regions through remote peering connections. One DRG can attach up to 300 VCNs, which
        makes it the hub of a hub-and-spoke design. DRG route tables and import route distributions
        decide which attachments can reach each other. In each VCN, add route rules for the on-premises
        CIDRs with the DRG as the target. A DRG is free; you pay for VPN, FastConnect ports and traffic
        between regions.""",
    ),
    (
        "lpg",
        "Local peering gateways (LPG)",
        """A local peering gateway connects two VCNs in the same region so that their resources can talk
        over private IPs. Create an LPG in each VCN, connect them from one side (both tenancies need
        policies if the VCNs belong to different tenancies), and add route rules for the other VCN's CIDR
        with the LPG as the target, plus security rules. The CIDRs of the two VCNs must not overlap.
        Peering is not transitive: if A peers with B and B with C, A cannot reach C. A VCN can have at
        most 10 LPGs. For many VCNs, or to peer across regions, attach them to a DRG instead.""",
    ),
)

# =============================================================================================
# Storage: the same task on block, boot, object and file storage
# =============================================================================================

family(
    "backup",
    "Backing up: block volume vs boot volume vs Object Storage vs File Storage",
    (
        "block-backup",
        "Back up block volumes",
        """Block volume backups are point-in-time, crash-consistent copies of a volume, stored in Object
        Storage and managed by the Block Volume service. Take a manual full or incremental backup from the
        volume's page, or assign a backup policy: Bronze (monthly incremental), Silver (weekly) or Gold
        (daily), or a custom policy with your own schedule and retention. The first backup is always full;
        later incremental backups copy only changed blocks. Backups can be copied to another region and
        restored to a new volume of the same or a larger size in any availability zone. Backups are billed
        at Object Storage standard rates for the data they hold.""",
    ),
    (
        "boot-backup",
        "Back up and restore boot volumes",
        """Boot volumes can be backed up like block volumes, manually or with the Bronze, Silver and Gold
        policies. A boot volume backup restores to a new boot volume, from which you launch a new
        instance; you cannot restore over the boot volume of a running instance. To return an existing
        instance to an earlier state, restore the backup and use Replace boot volume on the instance,
        which swaps the disk and keeps the instance's IP addresses. A custom image is different: it
        captures a boot volume to create many new instances, is never incremental and cannot be
        scheduled. Boot volume backups do not include attached block volumes.""",
    ),
    (
        "object-protect",
        "Protect Object Storage data: versioning, replication and retention rules",
        """Object Storage has no backup button, because every bucket is already stored redundantly across
        availability zones. To protect against deletes and overwrites, enable object versioning on the
        bucket: every overwrite or delete keeps the previous version, which you can restore. To protect
        against the loss of a region, add a replication policy that copies new objects asynchronously to
        a bucket in another region. For compliance, add a retention rule that locks objects for a period;
        locked rules cannot be shortened. Add a lifecycle rule that deletes previous versions after a
        number of days, or old versions keep adding to your storage bill.""",
    ),
    (
        "file-snapshots",
        "Snapshots for File Storage",
        """File systems in Nimbus File Storage are protected with snapshots, not with volume backups. A
        snapshot is a read-only, point-in-time view of the whole file system that uses space only for data
        changed since. Create one in the console or by running mkdir in the hidden .snapshot directory at
        the root of the mount. Snapshot policies take snapshots on a schedule and delete them after the
        retention period. Users restore single files by copying them out of .snapshot/<name>/; to restore
        everything, clone the file system from the snapshot. Snapshots live inside the file system, so use
        File Storage replication to another region for disaster recovery.""",
    ),
    (
        "file-replication",
        "Replicate a file system to another region",
        """File Storage replication copies a file system's changes to a target file system in another region
        or availability zone at an interval you choose, at most every 15 minutes. Create the replication
        on the source file system, pick the target region and a new, empty target file system, and set
        the interval. The target is read-only while replication runs. To fail over, delete the
        replication; the target becomes writable with the last replicated state. Cross-region data
        transfer is billed per GB. Replication does not protect against deleted files: a deletion on the
        source reaches the target at the next interval, so keep snapshot policies too.""",
    ),
)

family(
    "resize",
    "Making things bigger: block volume vs boot volume vs file system vs instance shape vs DB storage",
    (
        "block-resize",
        "Resize a block volume",
        """Block volumes can be expanded while attached and in use, up to 32 TB; they can never be made
        smaller. 1. Open the volume, click Edit and enter the new size. 2. Wait until the volume is
        Available again. 3. On the instance, rescan the device: for paravirtualized attachments run sudo
        nimbus-blockvolume rescan, for iSCSI run sudo iscsiadm -m node -R. 4. Grow the partition with
        growpart and then the file system with xfs_growfs or resize2fs. To shrink, create a smaller volume
        and copy the data across. Changing the performance level is a separate edit that also works
        online.""",
    ),
    (
        "boot-resize",
        "Expand a boot volume",
        """The default boot volume for Linux images is 47 GB. You can choose up to 32 TB at launch, or expand
        it later without stopping the instance: edit the boot volume and enter the new size, then on Linux
        run sudo /usr/libexec/nimbus-growfs -y, which extends the root partition and its file system in
        one step. On Windows, extend the C: volume in Disk Management. Boot volumes cannot be shrunk. If
        you need room for data rather than for the operating system, an attached block volume is usually
        better than a bigger boot volume, because it can move to another instance and has its own backup
        policy.""",
    ),
    (
        "file-size",
        "File system size and quotas in File Storage",
        """File Storage file systems are not provisioned: they grow and shrink as you write and delete data,
        and you pay for the GB actually stored, so there is nothing to resize. A mounted file system shows
        a size of 8 exabytes in df, the theoretical maximum, not your usage; use the metered size in the
        console. To stop one team from filling a shared file system, set quota rules per user, group or
        directory, with a soft limit that warns and a hard limit that rejects writes with Disk quota
        exceeded. Throughput grows with the amount of data stored unless you use high performance mount
        targets.""",
    ),
    (
        "instance-resize",
        "Change the shape of an instance",
        """To give an instance more CPU or memory, change its shape. With flexible shapes such as
        Standard.E5.Flex you can set any OCPU count from 1 to 94 and 1 to 64 GB of memory per OCPU; the
        edit reboots the instance, usually for a couple of minutes. You can also move between fixed and
        flexible shapes of the same processor family. Moving to another architecture, such as from x86 to
        Arm, is not possible; create a new instance from a compatible image instead. Shapes with local
        NVMe drives cannot be changed, because the local data would be lost. Attached volumes and private
        IP addresses are kept.""",
    ),
    (
        "db-storage-resize",
        "Increase the storage of a MySQL DB system",
        """The storage of a MySQL DB system can be increased online from the Edit page, up to 128 TB, without
        downtime. It cannot be decreased: to use less, dump the data and load it into a new, smaller DB
        system. Enable storage auto-expansion to let Nimbus grow the storage automatically when usage
        passes 90 percent, up to a maximum size you set; automatic growth happens at most once every six
        hours. The error ERROR 1114 (HY000): The table is full on a DB system usually means the storage is
        exhausted. Expand it and the server accepts writes again without a restart.""",
    ),
)

family(
    "encryption",
    "Encryption with your own keys: block volume vs Object Storage vs File Storage vs MySQL",
    (
        "block-encrypt",
        "Encryption for block and boot volumes",
        """All block and boot volumes are encrypted at rest with AES-256, and this cannot be turned off. By
        default Nimbus manages the keys. To control the key yourself, assign a master encryption key from
        Vault when you create the volume, or later under Edit > Encryption key; a policy must allow the
        Block Volume service to use the key. Data between the instance and the storage servers can also
        be encrypted in transit: enable in-transit encryption on paravirtualized attachments of supported
        images. iSCSI attachments do not support in-transit encryption. Backups keep the key of the
        source volume unless you choose another key when copying them.""",
    ),
    (
        "object-encrypt",
        "Encryption for Object Storage",
        """Object Storage encrypts every object at rest with AES-256, and there are three ways to hold the
        key. Nimbus-managed keys are the default. With a customer-managed key, you assign a Vault master
        encryption key to the bucket; new objects are encrypted with data keys wrapped by it, and
        disabling the key makes the bucket's objects unreadable. With customer-provided keys (SSE-C), you
        send your own 256-bit key in headers with each PUT and GET request and Nimbus never stores it;
        lose the key and the object is lost. Changing a bucket's key does not re-encrypt existing objects
        until they are rewritten.""",
    ),
    (
        "file-encrypt",
        "Encryption for File Storage",
        """File systems are encrypted at rest by default, with Nimbus-managed keys or with a Vault key that
        you assign at creation or later. NFS traffic, however, is not encrypted by default, because NFSv3
        has no encryption of its own. To encrypt data in transit, install the nimbus-fss-utils package on
        the client and mount with -o tls-mount, which wraps NFS in TLS through a local stunnel process on
        port 2051. In-transit encryption works on Nimbus Linux and Ubuntu clients, not on Windows. Because
        of the TLS overhead, expect 10 to 20 percent lower throughput for workloads with many small
        files.""",
    ),
    (
        "db-encrypt",
        "Encrypt a MySQL DB system with your own key",
        """Data and backups of MySQL DB systems are encrypted at rest with AES-256. By default Nimbus manages
        the key. From MySQL 8.0.35 you can choose a customer-managed key from Vault, but only when you
        create the DB system, not afterwards; to switch an existing system, restore a backup to a new DB
        system with the key. Backups use the same key, and copying a backup to another region needs a key
        in that region. Client connections use TLS by default; set require_secure_transport to refuse
        unencrypted clients. If the Vault key is disabled, the DB system stops and cannot start until the
        key is enabled again.""",
    ),
)

family(
    "load-balancers",
    "Flexible (layer 7) load balancer vs network (layer 4) load balancer: features, TLS, health",
    (
        "lb-flexible",
        "Flexible load balancer",
        """The flexible load balancer works at layer 7 (HTTP, HTTPS, HTTP/2 and WebSocket) and also offers
        plain TCP listeners. You set a minimum and maximum bandwidth between 10 and 8,000 Mbps; it scales
        within that range and you pay for the minimum plus any bandwidth used above it. It terminates TLS,
        routes by host name and path, rewrites headers, supports cookie-based session persistence, and is
        the only load balancer that can use a WAF policy. Backends see the load balancer's IP as the
        source and find the client IP in the X-Forwarded-For header. A public load balancer needs a
        regional subnet or two zonal subnets.""",
    ),
    (
        "nlb",
        "Network load balancer",
        """The network load balancer is a layer 4 pass-through load balancer for TCP, UDP and ICMP. It does
        not terminate TLS or look at HTTP, so it adds very little latency and handles millions of flows per
        second. Backends see the real client IP address, because source IP preservation is on by default.
        There are no shapes to choose, and the network load balancer itself is free; you only pay for
        data processing above the free allowance. Health checks can be TCP, HTTP or HTTPS. Use it for
        non-HTTP protocols, UDP services such as DNS or syslog, or in front of a Kubernetes ingress
        controller that terminates TLS itself.""",
    ),
    (
        "lb-cert",
        "Add a TLS certificate to a load balancer",
        """To serve HTTPS from a flexible load balancer: 1. Import the certificate into the Certificates
        service, or upload it on the load balancer's Certificates page in PEM format with its private key
        and the chain of intermediate certificates, server certificate first. 2. Create or edit a
        listener on port 443 with SSL enabled and select the certificate. 3. To serve several domains on
        one listener, add hostnames and use SNI with one certificate per hostname. Certificates issued by
        the Certificates service renew automatically; uploaded ones must be replaced before they expire.
        Network load balancers cannot hold certificates.""",
    ),
    (
        "lb-health",
        "Backend set shows Critical health and clients get 502 Bad Gateway",
        """A load balancer marks a backend unhealthy when its health check fails, and the backend set turns
        Critical when all backends fail, which clients see as 502 Bad Gateway. Common causes: the health
        check path returns a redirect or a 404 instead of 200; the health check port differs from the
        service port; the security lists or network security groups of the backends do not allow traffic
        from the load balancer's subnet; the OS firewall on the backend blocks the port. The health
        status of each backend shows the last error, such as Connection failed or Status code mismatch.
        Make the expected status code or regex match what your application returns.""",
    ),
)

# =============================================================================================
# Versions: the same feature in API v1 vs v2, CLI 2 vs 3, metadata service v1 vs v2
# =============================================================================================

family(
    "object-api",
    "Object Storage API v1 vs v2: listing, multipart uploads, and the v1 retirement",
    (
        "objapi-v1-list",
        "Listing objects with Object Storage API v1",
        """In API version 1 (path /n/{namespace}/b/{bucket}/o), ListObjects returns at most 1,000 objects
        per call, sorted by name. To get the next page, pass the name returned in nextStartWith as the
        start parameter of the next request. Filter with prefix; the delimiter parameter accepts only a
        slash. The fields parameter selects what is returned, and by default you get only the name, so
        request size,timeCreated,md5 explicitly. API v1 is what CLI 2.x and SDKs released before June 2024
        use. It keeps working but receives no new features; see the v2 notes and the retirement
        schedule.""",
    ),
    (
        "objapi-v2-list",
        "Listing objects with Object Storage API v2",
        """API version 2 (path /v2/n/{namespace}/b/{bucket}/objects) returns up to 5,000 objects per page
        and uses an opaque continuation token instead of an object name: pass the nextPageToken of the
        response as the page parameter. Tokens expire after 24 hours. Any character can be the delimiter,
        and results include size, ETag, storage tier and time modified by default. Object versions are
        listed by the same call with versions=true, whereas v1 needs a separate ListObjectVersions
        operation. CLI 3.x and current SDKs use v2 by default. Passing a v1 start value as a v2 page token
        returns 400 InvalidParameter.""",
    ),
    (
        "objapi-v1-multipart",
        "Multipart uploads with Object Storage API v1",
        """For objects larger than 100 MiB, use a multipart upload. In API v1: 1. CreateMultipartUpload
        returns an upload ID. 2. Upload the parts with UploadPart, numbered 1 to 10,000; every part except
        the last must be at least 10 MiB and at most 50 GiB. 3. Call CommitMultipartUpload with the part
        numbers and ETags. The resulting object can be up to 10 TiB. Uncommitted uploads keep their parts,
        and you are billed for them, until you abort the upload or a lifecycle rule removes it. The ETag
        of a multipart object is not the MD5 of its content; v1 returns a multipart MD5 header instead.""",
    ),
    (
        "objapi-v2-multipart",
        "Multipart uploads with Object Storage API v2",
        """API v2 keeps the create, upload part and commit flow of multipart uploads but changes the limits:
        parts can be as small as 5 MiB, the maximum object size is 50 TiB, and each part must carry an
        x-nimbus-checksum-sha256 header, which the service verifies before it accepts the part. The commit
        request lists the parts with their checksums and returns a composite checksum for the object.
        Uploads that are not committed within 7 days are aborted automatically, so a lifecycle rule for
        uncommitted parts is no longer needed. A multipart upload started with v1 must be finished with
        v1.""",
    ),
    (
        "objapi-v1-retire",
        "Release note: Object Storage API v1 retirement schedule",
        """Release note, March 2025. Object Storage API v1 enters its retirement phase. From 1 September
        2025, new tenancies can only call API v2. From 1 March 2026, v1 requests from existing tenancies
        are limited to 100 requests per second per bucket and get 429 TooManyRequests above that. API v1
        is switched off on 1 September 2026. To prepare, upgrade to CLI 3.x and to SDK versions released
        after June 2024, replace start and nextStartWith pagination with page tokens, and add SHA-256
        checksums to multipart uploads. The S3 compatibility API is not affected.""",
    ),
)

family(
    "cli",
    "Nimbus CLI 2.x vs 3.x: configuration files, authentication and breaking changes",
    (
        "cli-v2-config",
        "Configure the Nimbus CLI 2.x",
        """CLI 2.x reads its settings from ~/.nimbus/config, an INI file with one section per profile. Each
        profile needs user, fingerprint, key_file, tenancy and region entries. Run nimbus setup config to
        create the file interactively; the command can also generate an API key pair. Select a profile
        with --profile or the NIMBUS_CLI_PROFILE environment variable. Default values for command options,
        such as a compartment ID, go into a second file, ~/.nimbus/nimbus_cli_rc. CLI 2.x supports only API
        key authentication and instance principals; browser sign-in is not available. CLI 2.x reaches end
        of support in December 2025.""",
    ),
    (
        "cli-v3-config",
        "Configure the Nimbus CLI 3.x",
        """CLI 3.x uses a single TOML file, ~/.config/nimbus/config.toml, with one profiles table per profile.
        The recommended setup is browser sign-in: nimbus login --region eu-central-1 opens the console,
        and the CLI stores a session token that it refreshes for up to 24 hours. API keys still work when
        the profile sets auth to api_key. An existing 2.x INI file is imported on the first run if no TOML
        file exists yet, but later edits to the INI file are ignored. Default values for command options
        live in the same TOML file, in a defaults table, instead of a separate rc file.""",
    ),
    (
        "cli-v3-breaking",
        "Release note: Nimbus CLI 3.0 breaking changes",
        """Release note, June 2024. Nimbus CLI 3.0 is available. Changes that can break scripts: output is a
        table by default in interactive terminals and JSON when piped, so scripts that parse the output
        should pass --output json explicitly; list commands return all pages by default, so use --limit to
        restrict them; the --all flag is removed; timestamps are printed in UTC ISO 8601 with a Z suffix;
        Object Storage commands call API v2. Python 3.8 is no longer supported. CLI 2.x and 3.x can be
        installed side by side: the installer names the 3.x binary nimbus and renames 2.x to nimbus2.""",
    ),
    (
        "cli-install",
        "Install the Nimbus CLI",
        """The Nimbus CLI runs on Linux, macOS and Windows. On Linux and macOS, run the installer script from
        cli.nimbuscloud.com/install.sh or use Homebrew with brew install nimbus-cli. On Windows, use the
        MSI package or winget install Nimbus.CLI. Python is bundled, so no separate Python installation is
        needed. Check the version with nimbus --version and upgrade later with nimbus upgrade. Cloud Shell,
        the browser terminal in the console, has the latest CLI preinstalled and already signed in as you,
        which is the quickest way to try a command without installing anything.""",
    ),
)

family(
    "metadata",
    "Instance metadata service v1 vs v2, user data and custom metadata",
    (
        "imds-v1",
        "Instance metadata service v1",
        """Inside an instance, the metadata service at http://169.254.169.254/nimbus/v1/ returns information
        about the instance, such as its ID, shape, region, compartment, tags and user data. In v1, any
        process on the instance can send a plain GET request without headers, for example curl
        http://169.254.169.254/nimbus/v1/instance/. That is convenient, but it also means that a
        server-side request forgery bug in an application can leak metadata and instance principal
        certificates. The v1 endpoints are enabled on instances launched before May 2023 and can be
        disabled per instance.""",
    ),
    (
        "imds-v2",
        "Instance metadata service v2",
        """The v2 endpoint is http://169.254.169.254/nimbus/v2/, and every request must carry the header
        Authorization: Bearer Nimbus; requests without it get 401 Unauthorized. Because an attacker who
        exploits server-side request forgery usually cannot add arbitrary headers, this blocks the most
        common way of stealing metadata. The paths are the same as in v1. To enforce v2 on an existing
        instance, edit it and disable the legacy v1 endpoints, but first check that agents and scripts on
        the instance, including old versions of the Nimbus agent and SDKs, already use v2. Instances
        launched from images published after May 2023 have v1 disabled.""",
    ),
    (
        "cloud-init",
        "Run a script at first boot with user data (cloud-init)",
        """Pass a shell script or a cloud-config file as user data when you launch an instance, under
        Advanced options > Management. Nimbus Linux and Ubuntu images run it with cloud-init on the first
        boot only, as root. Output goes to /var/log/cloud-init-output.log, the first place to look when a
        script seems not to have run. User data is limited to 32 KB and is visible to anyone who can read
        the instance metadata, so never put secrets in it; read them from Vault at runtime instead. User
        data cannot be changed on an existing instance; launch a new instance to use a different
        script.""",
    ),
    (
        "instance-custom-metadata",
        "Custom metadata key-value pairs on instances",
        """Besides user data, you can attach your own metadata key-value pairs to an instance at launch, such
        as role=web or environment=prod. The metadata service returns them under /instance/metadata/, and
        extended metadata accepts nested JSON up to 32 KB in total. Unlike freeform tags, custom metadata
        can be read from inside the instance without any credentials, but it cannot be used in IAM policy
        conditions or in cost reports. Metadata can be updated after launch through the API; processes
        only see the change when they query the endpoint again, and cloud-init does not run again.""",
    ),
)

# =============================================================================================
# Regions and limits: the same question, different answer per region
# =============================================================================================

family(
    "regions",
    "Regions: GPU availability, default limits in North America vs Europe, subscriptions, sovereign realm",
    (
        "gpu-regions",
        "GPU shape availability by region",
        """GPU instances are not offered in every region. GPU.A100 (bare metal, eight GPUs) and GPU.H100 are
        available in na-east-1 (Ashburn), na-west-1 (Phoenix) and eu-central-1 (Frankfurt). GPU.A10 (a
        virtual machine with one to four GPUs) is available in those regions and also in eu-west-2
        (Dublin), ap-south-1 (Mumbai) and ap-northeast-1 (Tokyo). New tenancies have a GPU limit of zero
        in every region and must request an increase that names the region and the shape. If launches
        fail with Out of host capacity, try another availability zone of the same region or create a
        capacity reservation.""",
    ),
    (
        "limits-na",
        "Default compute limits in na-east-1 and na-west-1",
        """Service limits are set per tenancy and per region. In the North American regions na-east-1
        (Ashburn) and na-west-1 (Phoenix), a new paid tenancy starts with 200 OCPUs of Standard E5 and E4
        flexible shapes per availability zone, 50 OCPUs of Arm A2 shapes, 24 bare metal OCPUs and no
        GPUs. Trial tenancies get much less, 8 OCPUs in total. See your current limits and usage under
        Governance > Limits, Quotas and Usage, and request increases on the same page; increases for
        standard shapes in these regions are usually approved automatically within minutes.""",
    ),
    (
        "limits-eu",
        "Default compute limits in European regions",
        """In eu-central-1 (Frankfurt) and eu-west-2 (Dublin), new paid tenancies start with lower default
        limits than in North America: 100 OCPUs of Standard E5 and E4 flexible shapes per availability
        zone, 24 OCPUs of Arm A2, no bare metal and no GPUs. Requests for more than 400 OCPUs per zone in
        Frankfurt are reviewed by hand because of capacity constraints and can take up to three business
        days. The eu-sovereign-1 region belongs to a separate realm with its own tenancies, so its limits
        are independent of your commercial tenancy.""",
    ),
    (
        "region-subscribe",
        "Subscribe to additional regions",
        """A tenancy starts with only its home region. To use another region, open Governance > Regions and
        click Subscribe next to it; this takes a few minutes and cannot be undone. A tenancy can subscribe
        to up to 10 regions by default. IAM resources such as users, groups, policies and compartments
        are global: they are managed in the home region and replicated to the others, while other
        resources are regional. The home region is chosen at sign-up and cannot be changed later. Trial
        tenancies cannot subscribe to more regions until they upgrade to a paid account.""",
    ),
    (
        "sovereign",
        "EU Sovereign region eu-sovereign-1",
        """The EU Sovereign region eu-sovereign-1 (Madrid) is operated by an EU-based Nimbus subsidiary with
        EU-resident staff, for customers with data residency and sovereignty requirements. It belongs to a
        separate realm: you need a separate tenancy and sign in at a different console address, and
        identities, support requests and billing are separate from the commercial regions. VCNs cannot be
        peered and buckets cannot be replicated between eu-sovereign-1 and commercial regions such as
        eu-central-1. Not every service is available there yet; Managed Kafka, GPU shapes and Email
        Delivery are missing.""",
    ),
)

# =============================================================================================
# Pricing: tiers that look alike
# =============================================================================================

family(
    "storage-pricing",
    "Storage pricing: Object Storage Standard vs Infrequent Access vs Archive, Block Volume, File Storage",
    (
        "obj-standard-pricing",
        "Object Storage pricing: Standard tier",
        """The Standard tier is for data you read often. You pay $0.0255 per GB-month stored in all
        commercial regions, with no minimum storage duration and no charge for reading data back. The
        first 10 GB per month are free. Requests are billed per 10,000, and the first 50,000 each month are
        free. Data sent out to the internet is billed separately as outbound data transfer, with the
        first 10 TB per month free, while transfer to other Nimbus services in the same region is free.
        Auto-tiering can move objects that have not been read for 30 days to Infrequent Access for
        you.""",
    ),
    (
        "obj-ia-pricing",
        "Object Storage pricing: Infrequent Access tier",
        """Infrequent Access costs $0.01 per GB-month, less than half of Standard, for data read less than
        about once a month. Two extra charges apply: a retrieval fee of $0.01 per GB read, and a minimum
        storage duration of 31 days, so an object deleted or moved after 10 days is billed for the full 31.
        Objects are readable immediately, with the same latency as Standard; there is no restore step.
        You can make Infrequent Access the default tier of a bucket or move objects with lifecycle rules.
        Buckets with auto-tiering enabled manage the tier themselves and cannot set it.""",
    ),
    (
        "obj-archive-pricing",
        "Object Storage pricing: Archive tier",
        """The Archive tier costs $0.0026 per GB-month and is meant for data kept for years and rarely read,
        such as compliance records and old backups. Objects must be restored before they can be
        downloaded; a restore takes up to one hour, and the restored copy stays readable for 24 hours by
        default, up to 240 hours. Archive has a minimum storage duration of 90 days: deleting an object
        earlier is billed as if it had been stored for 90 days. Restores are not charged per GB, but the
        restored copy is billed at the Standard rate while it exists.""",
    ),
    (
        "block-perf-pricing",
        "Block Volume performance levels and pricing",
        """The price of a block volume has two parts: storage at $0.0255 per GB-month, and performance,
        bought in volume performance units (VPUs) at $0.0017 per VPU per GB-month. The levels are Lower
        Cost (0 VPUs, 2 IOPS per GB), Balanced (10 VPUs, 60 IOPS per GB, up to 25,000 IOPS), Higher
        Performance (20 VPUs, 75 IOPS per GB) and Ultra High Performance (30 to 120 VPUs, up to 300,000
        IOPS, which needs a multipath iSCSI attachment). A 1 TB Balanced volume therefore costs about $43
        a month. Performance auto-tune drops detached volumes to Lower Cost automatically.""",
    ),
    (
        "file-pricing",
        "File Storage pricing",
        """File Storage is billed for the data stored, averaged over the month, at $0.30 per GB-month;
        snapshots are billed only for the changed data they hold. There are no provisioning or request
        charges and no minimum size. High performance mount targets, which guarantee throughput of 20, 40
        or 80 Gbps, are billed per hour on top of the storage. Replication to another region adds the
        cross-region data transfer charge. For large amounts of rarely read files, Object Storage is much
        cheaper: File Storage is priced for shared POSIX access, not for archiving.""",
    ),
)

family(
    "compute-pricing",
    "Paying for compute: on-demand vs preemptible vs committed credits vs capacity reservations vs Always Free",
    (
        "compute-ondemand",
        "Compute billing for on-demand instances",
        """On-demand instances are billed per second with a one-minute minimum. Flexible shapes are billed
        for OCPUs and memory separately: Standard.E5.Flex costs $0.03 per OCPU-hour and $0.002 per GB-hour
        of memory. Billing stops when you stop a virtual machine on a standard shape, except for the boot
        volume and attached block volumes, which are billed until they are deleted, and reserved public
        IPs that are not attached. Bare metal shapes with local NVMe and all GPU shapes keep billing while
        stopped, because the host stays reserved for you; terminate them to stop the charges.""",
    ),
    (
        "compute-preemptible",
        "Preemptible instances",
        """Preemptible instances cost 50% less than on-demand ones, but Nimbus can reclaim them at any time
        when it needs the capacity. Before reclaiming an instance, Nimbus sends a preemption notice
        through the instance metadata service and the Events service 30 seconds in advance. At creation
        you choose whether the boot volume is kept or deleted when the instance is preempted. Preemptible
        instances cannot be stopped and started, only terminated, and the compute SLA does not cover them.
        Use them for batch jobs, CI runners and stateless workers that tolerate interruption, for example
        in an NKE node pool.""",
    ),
    (
        "compute-commit",
        "Annual commitments with Universal Credits",
        """With an annual commitment you prepay an amount of Universal Credits for one to three years and get
        a discount on every service, usually 15 to 33 percent depending on the amount and the term.
        Credits are consumed at the discounted rate by any service in any region; they are not tied to
        particular instances or shapes, unlike reserved instances at some other providers. Unused credits
        expire at the end of each year of the term. Usage above the committed amount is billed as
        overage at the discounted rate. Pay-as-you-go accounts can move to a commitment at any time
        through a sales representative.""",
    ),
    (
        "compute-free-tier",
        "Always Free resources",
        """Every tenancy, including paid ones, gets Always Free resources that never expire: two Micro.E2
        instances with 1/8 OCPU and 1 GB of memory each, Arm A2 shapes with up to 4 OCPUs and 24 GB of
        memory in total, 200 GB of block volume storage including boot volumes, 20 GB of Object Storage,
        one standalone MySQL DB system with 50 GB of storage, a flexible load balancer at 10 Mbps, and 10
        TB of outbound data transfer a month. Always Free resources exist only in the home region. The
        trial credit of $300 for 30 days is separate: when it ends, paid resources stop unless you
        upgrade, but Always Free ones keep running.""",
    ),
    (
        "compute-capacity-reservation",
        "Capacity reservations",
        """A capacity reservation sets compute capacity aside in an availability zone, so that launches do
        not fail with Out of host capacity during peaks or in a disaster recovery event. You reserve a
        number of instances of a shape. Reserved capacity that is not in use is billed at 85% of the
        on-demand price; once you launch an instance into the reservation, that instance is billed at the
        normal on-demand price. Reservations have no fixed term and can be resized or deleted at any time.
        They do not give a discount, they guarantee availability. Preemptible instances cannot use a
        reservation.""",
    ),
)

family(
    "governance",
    "Service limits vs compartment quotas vs budgets vs cost analysis",
    (
        "service-limits",
        "Service limits",
        """Service limits are caps that Nimbus sets on your tenancy in each region, such as the number of
        OCPUs of a shape or the number of VCNs. They protect capacity and stop runaway automation. When a
        request would exceed one, the API returns 400 LimitExceeded with the limit's name, for example
        standard-e5-core-count. You can see every limit and your current usage under Governance > Limits,
        Quotas and Usage, and request an increase there. Limits apply to the whole tenancy; to share them
        between teams, use compartment quotas. Limits are about capacity, not money; to control spending,
        use budgets.""",
    ),
    (
        "compartment-quotas",
        "Compartment quotas",
        """Compartment quotas let administrators divide the tenancy's service limits between teams. A quota
        policy uses statements such as set compute-core quota standard-e5-core-count to 40 in compartment
        dev, zero database quotas in compartment sandbox, or unset to remove a quota. Quotas are checked
        together with service limits: a launch that would exceed a quota fails with 400 QuotaExceeded even
        when the tenancy limit still has room. A condition such as where request.region = eu-central-1
        makes a quota apply to one region only. Quotas cannot raise a limit, only restrict below it.""",
    ),
    (
        "budgets",
        "Budgets and budget alerts",
        """A budget tracks spending for a compartment or a cost-tracking tag, per month or over a custom date
        range. Alert rules send an email or publish to a Notifications topic when actual or forecast
        spending passes a threshold, such as 80% of the budget. Budgets are evaluated about once an hour,
        so an alert can arrive a while after the threshold was crossed. A budget never stops resources or
        blocks launches; it only notifies. To actually prevent spending, combine it with compartment
        quotas, or let the Notifications topic trigger a function that stops instances.""",
    ),
    (
        "cost-analysis",
        "Cost analysis and usage reports",
        """Cost Analysis in the console shows charges by service, compartment, tag, region and SKU over time,
        with filters and grouping, and forecasts the rest of the month. Its data is refreshed every few
        hours and can lag up to 24 hours. For detailed work, usage reports are CSV files written daily to
        a Nimbus-owned bucket that you read through a cross-tenancy policy; each line is one resource's
        usage for one hour, and cost reports add the price. Put cost-tracking tags on resources to split a
        shared bill between projects; tags only apply to usage recorded after they were added.""",
    ),
)

# =============================================================================================
# Operations: observability, serverless, DNS, access to objects, secrets
# =============================================================================================

family(
    "observability",
    "Monitoring metrics vs alarms vs Logging vs Audit vs VCN flow logs",
    (
        "monitoring-metrics",
        "Monitoring: metrics and the metrics explorer",
        """The Monitoring service collects metrics that Nimbus services publish automatically, such as
        CpuUtilization for instances or BytesReceived for load balancers, at one-minute resolution, and
        keeps them for 90 days. Query them in the metrics explorer with MQL, for example
        CpuUtilization[5m].mean(), grouped by resource. Memory and disk usage inside an instance are
        invisible to the hypervisor: they are only published when the Compute Instance Monitoring plugin
        of the Nimbus agent is enabled. Applications can post custom metrics with the PostMetricData API,
        up to 50 metric streams per call.""",
    ),
    (
        "alarms",
        "Alarms",
        """An alarm evaluates an MQL query every minute and fires when the condition holds for the pending
        duration, for example CpuUtilization[1m].mean() > 90 for five minutes. When it fires, Monitoring
        sends a message to a Notifications topic, which delivers it by email, SMS, Slack, PagerDuty or
        HTTPS. Alarms can repeat their notification while firing and can be suppressed during
        maintenance. An alarm in the No data state means the metric stopped arriving, often because the
        instance or its agent is down; set missing data to be treated as firing if that should page
        someone. A tenancy can have 1,000 alarms by default.""",
    ),
    (
        "logging",
        "Logging service: service logs and custom logs",
        """The Logging service stores logs in log groups. Service logs come from Nimbus services once you
        enable them on a resource, for example load balancer access logs, WAF logs, Functions invocation
        logs or VCN flow logs. Custom logs come from your own applications: install the Unified Monitoring
        agent on the instance and create an agent configuration that names the files to collect, such as
        /var/log/nginx/*.log. Logs are kept for 30 days by default, configurable up to 180 days; for longer
        retention, move them to Object Storage with Connector Hub. Search across log groups with the log
        search query language.""",
    ),
    (
        "audit",
        "Audit logs",
        """The Audit service automatically records every call to the Nimbus public APIs in your tenancy,
        console actions included, with the caller, source IP, request and response status. Nothing has to
        be enabled, and audit events cannot be changed or deleted. They are kept for 365 days. Audit tells
        you who did what to which resource, for example who deleted a bucket or changed a security list;
        it does not record activity inside your workloads, such as SQL statements or commands run over
        SSH. Search audit events on the Audit page or in log search; to keep them longer than a year,
        export them to Object Storage.""",
    ),
    (
        "flow-logs",
        "VCN flow logs",
        """Flow logs record network traffic accepted or rejected by security lists and network security
        groups, for the VNICs of a subnet, a VCN or a single resource. Each record shows source and
        destination IP and port, protocol, packet and byte counts, and the action ACCEPT or REJECT. Enable
        them in the Logging service as a service log on the subnet; records arrive within about 10
        minutes. Flow logs are the fastest way to find which rule drops traffic: a REJECT record confirms
        a security rule problem, while no record at all points to routing. Flow logs never capture packet
        contents.""",
    ),
)

family(
    "serverless",
    "Functions vs Container Instances: limits, timeouts, cold starts",
    (
        "functions-overview",
        "Nimbus Functions concepts and limits",
        """Nimbus Functions runs your code in response to HTTP calls, events or schedules, based on the
        open-source Fn Project. A function is a container image pushed to Container Registry and grouped
        into an application, which sets the subnet the function runs in. Limits: memory from 128 MB to 2
        GB per function, a timeout of up to 300 seconds (30 by default), and request and response
        payloads of up to 6 MB. Billing is per GB-second of execution, with 400,000 GB-seconds free each
        month. For work that takes longer than five minutes, use Container Instances or a job on NKE.""",
    ),
    (
        "functions-coldstart",
        "The first call to a function is slow (cold start)",
        """The first invocation of a function after a deployment, or after a period without calls, can take
        several seconds, because Nimbus has to pull the image and start a container. Later calls reuse the
        warm container and return in milliseconds. To reduce cold starts, keep images small by using the
        Fn slim base images and avoiding large dependencies, and enable provisioned concurrency on
        functions that must always answer quickly; it keeps a number of containers warm and is billed
        even when idle. Idle containers are recycled after about 30 minutes without calls.""",
    ),
    (
        "container-instances",
        "Container Instances",
        """Container Instances run one or more containers on serverless compute, with no Kubernetes cluster
        and no virtual machines to manage. You specify the images, a shape with OCPUs and memory,
        environment variables and a subnet, and the container instance starts in under a minute. There is
        no time limit, so it fits long-running jobs, services and workers that exceed the five-minute
        timeout of Functions. Up to 10 containers in one container instance share a network namespace and
        can use ephemeral or NFS volumes. There is no built-in autoscaling or rolling deployment; use NKE
        for orchestration. Billing is per second for OCPUs and memory.""",
    ),
    (
        "functions-timeout",
        "Function fails with a timeout (504)",
        """If invoking a function returns 504 with a message such as function timed out after 30 seconds,
        the function ran past its configured timeout. The default is 30 seconds; raise it on the
        function's page, up to the maximum of 300 seconds. Also check what the function waits for:
        functions in a private subnet without a NAT gateway or service gateway cannot reach the internet
        or Nimbus APIs, so outbound calls hang until the timeout. Calls to other Nimbus services also need
        the function in a dynamic group with a matching policy. The invocation logs show how long each
        call ran.""",
    ),
)

family(
    "dns",
    "DNS: public zones vs private resolver and views vs traffic steering",
    (
        "dns-public-zone",
        "Public DNS zones",
        """Host your domain's public DNS records in Nimbus DNS by creating a public zone, for example
        example.com, and adding records such as A, AAAA, CNAME, MX, TXT and CAA. Then change the name
        servers at your domain registrar to the four Nimbus name servers listed on the zone page; until
        you do, the internet keeps using your old DNS provider and the new records are never seen.
        Changes are published to all Nimbus name servers within seconds, but resolvers keep old answers
        until their TTL expires. Zones are billed per zone per month plus per million queries. DNSSEC can
        be enabled per zone.""",
    ),
    (
        "dns-private",
        "Private DNS: resolvers, private views and resolver endpoints",
        """Each VCN has a private DNS resolver that answers names of resources inside the VCN, such as
        instance hostnames under subnet.vcn.nimbusvcn.com. To use your own private domains, create a
        private zone in a private view and attach the view to the VCN's resolver. To resolve names in both
        directions with on-premises DNS servers, add resolver endpoints: a listening endpoint receives
        queries from on-premises, and a forwarding endpoint sends queries for the domains named in
        forwarding rules to on-premises servers. Private zones are free and are never visible from the
        internet.""",
    ),
    (
        "dns-peered-troubleshoot",
        "Cannot resolve hostnames of instances in a peered VCN",
        """Instances in one VCN cannot resolve the hostnames of instances in a peered VCN by default, even
        when traffic between the IP addresses works, because each VCN's resolver only knows its own
        private views. Fix it by attaching the other VCN's default private view to your VCN's resolver,
        under Private resolver > Associated private views. Across tenancies, create a forwarding endpoint
        and a rule for the other VCN's domain instead. Also check that the other VCN's subnets have DNS
        labels; subnets created without a DNS label give their instances no hostnames at all.""",
    ),
    (
        "dns-steering",
        "Traffic management steering policies",
        """Steering policies answer DNS queries for a name differently depending on health and location.
        Failover policies return the primary endpoint while its health check passes and the secondary
        otherwise. Load balancer policies spread answers over several endpoints by weight. Geolocation
        and ASN policies answer by the client's region or network, for example to keep European users on
        eu-central-1. Policies are attached to names in a public zone. Answers are cached for the TTL, so
        failover can only be as fast as the TTL; use 30 to 60 seconds for failover records. Policies are
        billed per month and per million queries.""",
    ),
)

family(
    "object-access",
    "Sharing Object Storage data: pre-authenticated requests vs public buckets vs S3 API vs CORS",
    (
        "par",
        "Pre-authenticated requests (PAR)",
        """A pre-authenticated request gives anyone who has its URL access to an object or a bucket without
        Nimbus credentials, until an expiry time you set. Create it on the object or bucket page: choose
        the scope (one object, a prefix or the whole bucket), the access (read, write, or both, and
        whether listing is allowed) and the expiration date. The full URL is shown only once; if you lose
        it, create another one. Delete a PAR to revoke it early. A PAR acts with the permissions of the
        user who created it, so it stops working if that user is deleted or loses access to the
        bucket.""",
    ),
    (
        "public-bucket",
        "Make a bucket public",
        """Buckets are private by default. Changing a bucket's visibility to Public lets anyone list and
        download its objects without authentication, or only download them if you disable listing. Use it
        only for data meant for everyone, such as website assets or public datasets. Uploads always need
        credentials, even to a public bucket. To share one file for a limited time, a pre-authenticated
        request is safer than a public bucket. Administrators can forbid public buckets in a compartment
        with a security zone or a policy condition on the bucket's public access type.""",
    ),
    (
        "s3-compat",
        "Amazon S3 compatibility API",
        """Object Storage accepts most Amazon S3 API calls, so tools written for S3 work once you point them
        at https://<namespace>.compat.objectstorage.<region>.nimbuscloud.com and use customer secret keys
        as access and secret keys. Use path-style addressing, because virtual-hosted-style bucket URLs are
        not supported. Supported: bucket and object operations, multipart uploads, presigned URLs with
        signature version 4, object tagging and SSE-C. Not supported: S3 bucket policies and ACLs (use IAM
        policies), S3 Select, static website hosting and Object Lock (use retention rules). The region set
        in the SDK must be the Nimbus region name, such as eu-central-1.""",
    ),
    (
        "cors",
        "CORS rules for Object Storage buckets",
        """Browsers block JavaScript on one origin from reading or uploading objects in a bucket unless the
        bucket answers with CORS headers. Set CORS rules on the bucket's CORS tab or with nimbus os bucket
        cors put: each rule lists allowed origins, methods (GET, PUT, POST, DELETE, HEAD), allowed headers
        and a max age, and a bucket can have up to 10 rules. The browser error No
        Access-Control-Allow-Origin header is present on the requested resource means that no rule
        matched the origin or method; origins must match scheme, host and port exactly. Pre-authenticated
        request URLs honour the bucket's CORS rules.""",
    ),
)

family(
    "vault",
    "Vault: master encryption keys vs secrets, rotation, default vs virtual private vault",
    (
        "vault-keys",
        "Vault master encryption keys",
        """Master encryption keys in Vault protect data in other services: Block Volume, Object Storage,
        File Storage and the database services wrap their data keys with your key. Create a key in a
        vault, choosing the algorithm (AES for storage services, RSA or ECDSA) and the protection mode:
        HSM keys never leave the hardware security module, software keys are cheaper and can be exported.
        Services call Vault to wrap and unwrap their data keys, so the key material itself stays in
        Nimbus. Disabling a key makes the data it protects unreadable until you enable it again; deleting
        a key is scheduled 7 to 30 days ahead and is irreversible.""",
    ),
    (
        "vault-secrets",
        "Vault secrets",
        """Secrets hold passwords, API tokens, certificates and connection strings so that applications do
        not keep them in code or configuration files. Each secret is encrypted with a master encryption
        key of the same vault and has versions: a new version becomes current, and older versions stay
        readable until they are deprecated. Read a secret with nimbus secrets secret-bundle get, or from
        an instance through instance principals and a policy such as Allow dynamic-group app to read
        secret-family in compartment prod. Secret rules can forbid reusing old content and set an expiry.
        A secret's content is at most 25 KB.""",
    ),
    (
        "vault-rotation",
        "Rotate a master encryption key",
        """Rotating a key creates a new key version that becomes current; it does not re-encrypt existing
        data. New data keys are wrapped with the new version, and older versions remain available to
        unwrap data encrypted before the rotation. Rotate a key from its page with Rotate key, or set an
        automatic rotation interval between 60 and 365 days. In Object Storage, existing objects keep the
        old key version until they are rewritten; block volumes have their data key rewrapped with the new
        version automatically within a day. Rotating a secret is different: it means creating a new secret
        version with new content.""",
    ),
    (
        "vault-types",
        "Virtual private vault vs default vault",
        """A default vault shares HSM partitions with other tenancies and has no monthly fee: HSM key
        versions are billed per month and software keys are free. A virtual private vault gets its own
        isolated HSM partition, which some compliance programmes require, and costs a fixed monthly fee
        however little you use it. A default vault holds up to 3,000 key versions; a virtual private vault
        holds more and can be replicated to another region for disaster recovery. The vault type cannot
        be changed after creation. Both types store secrets in the same way.""",
    ),
)

family(
    "instance-access",
    "Getting into an instance: SSH key errors vs SSH timeouts vs RDP vs serial console vs Bastion",
    (
        "ssh-publickey",
        "SSH fails with Permission denied (publickey)",
        """Permission denied (publickey) means the network path works but the server rejected your key.
        Check: 1. The user name: Nimbus Linux images use opc and Ubuntu images use ubuntu; root login is
        disabled. 2. The private key: pass it with ssh -i and make sure it matches the public key given at
        launch; keys added to the console later are not copied into an existing instance. 3. File
        permissions: the private key must be readable only by you (chmod 600). If the key is lost, attach
        the boot volume to another instance and edit authorized_keys, or fix it from the serial
        console.""",
    ),
    (
        "ssh-timeout",
        "SSH connection timed out",
        """The message ssh: connect to host port 22: Connection timed out means packets never reach the SSH
        daemon. For an instance in a public subnet, check that it has a public IP, that the subnet's route
        table sends 0.0.0.0/0 to an internet gateway, and that a security list or network security group
        allows TCP 22 from your address. Many corporate networks block outbound port 22. Instances in
        private subnets cannot be reached directly; connect through the Bastion service or a VPN. If SSH
        worked before and suddenly stopped, check that the instance is running and that nobody changed
        the firewall inside the OS.""",
    ),
    (
        "rdp-windows",
        "Connect to a Windows instance with Remote Desktop",
        """Windows instances do not use SSH keys. At launch, Nimbus generates an initial password for the
        opc user and shows it on the instance page until you change it. To connect: 1. Add an ingress rule
        for TCP 3389 from your IP address to the security list or network security group. 2. Open Remote
        Desktop Connection with the instance's public IP, the user opc and the initial password. 3. Set a
        new password when asked. If you forget the new password, reset it through a PowerShell session on
        the serial console, or detach the boot volume and repair it from another Windows instance.""",
    ),
    (
        "serial-console",
        "Instance console connection (serial console)",
        """A console connection gives you a serial console on an instance even when networking inside the OS
        is broken, for example after a bad firewall rule, a wrong fstab entry or a failed kernel update.
        Create it on the instance page under Console connections with your SSH public key; Nimbus shows
        an ssh command that goes through a console proxy. From the serial console you can boot into
        maintenance mode, fix configuration files or reset a password. You still need an OS user with a
        password to log in at the console prompt, so set one in advance for emergencies. Console
        connections are not meant for daily access.""",
    ),
    (
        "bastion",
        "Bastion service: managed SSH and port forwarding sessions",
        """The Bastion service gives time-limited access to resources in private subnets, without public IPs
        and without a jump host to maintain. Create a bastion in the target VCN with an allow list of
        client CIDRs. Then create a session: a managed SSH session connects to an instance's SSH server
        through the Bastion plugin of the Nimbus agent, while a port forwarding session opens a tunnel to
        any TCP port, such as 3306 on a MySQL DB system or 5432 on a PostgreSQL cluster, which have no SSH.
        Sessions last up to three hours, and a bastion allows 20 active sessions by default.""",
    ),
)

family(
    "hybrid",
    "Connecting and moving data from on-premises: site-to-site VPN vs FastConnect vs transfer appliance vs online upload",
    (
        "vpn",
        "Site-to-site VPN",
        """Site-to-site VPN connects your on-premises network to a VCN over encrypted IPSec tunnels across
        the internet. Create a customer-premises equipment (CPE) object with the public IP of your router,
        attach a DRG to the VCN, and create an IPSec connection with static routes or BGP. Each connection
        has two tunnels for redundancy; configure both on your router. A tunnel carries up to 250 Mbps,
        depending on internet conditions. VPN takes minutes to set up and has no port fees, which makes it
        good for getting started and as a backup path for FastConnect.""",
    ),
    (
        "fastconnect",
        "FastConnect",
        """FastConnect is a private, dedicated connection between your data centre and Nimbus that does not
        cross the internet. You order a port of 1, 10, 100 or 400 Gbps through a partner or at a
        colocation facility, create a virtual circuit on it, and connect it either to a DRG (private
        peering) or to public Nimbus services such as Object Storage (public peering). Latency is
        consistent and there are no data transfer charges over FastConnect; you pay an hourly port fee.
        Provisioning through a partner takes days to weeks. For redundancy, use two virtual circuits in
        different locations, or a site-to-site VPN as backup.""",
    ),
    (
        "vpn-troubleshoot",
        "IPSec tunnel is down",
        """If an IPSec tunnel shows Down: 1. Compare the IKE version and the encryption, hash and
        Diffie-Hellman group of phase 1 and phase 2 on both sides; Nimbus proposes AES-256-GCM, SHA-384 and
        group 20 by default. 2. Check the shared secret, which is set per tunnel. 3. Make sure the CPE
        public IP matches the address your router really uses; behind NAT, set the CPE IKE identifier to
        the private address. 4. With policy-based routers, each pair of on-premises and VCN CIDRs forms a
        separate security association that must match exactly. If the tunnel is up but no traffic flows,
        check the DRG and VCN route tables and the security rules.""",
    ),
    (
        "transfer-appliance",
        "Data Transfer Appliance",
        """To move hundreds of terabytes into Object Storage when the network is too slow, request a Data
        Transfer Appliance: a Nimbus-owned storage device with 150 TB of usable space that is shipped to
        your site. Connect it to your network over 10 GbE, copy the data to its NFS share, and ship it
        back. Nimbus uploads the data to the bucket you named and then wipes the appliance. A round trip
        usually takes two to three weeks. Data on the appliance is encrypted with a passphrase that only
        you hold. There is a fee per appliance after the free period; the upload into Object Storage is
        free.""",
    ),
    (
        "transfer-online",
        "Upload large amounts of data over the network",
        """For up to a few tens of terabytes, uploading over the network is usually faster than shipping
        hardware. The CLI command nimbus os object bulk-upload uploads a whole directory in parallel and
        switches to multipart uploads for large files automatically; tune --parallel-upload-count and
        --part-size to your bandwidth. rclone and other tools for the S3 compatibility API work too.
        Inbound data transfer is always free. As a rule of thumb, a dedicated 1 Gbps link moves about 10
        TB a day; for more than 100 TB or on slow links, consider a Data Transfer Appliance or
        FastConnect.""",
    ),
)

# =============================================================================================
# Release notes: the same product at different versions
# =============================================================================================

family(
    "releases",
    "Release notes: NKE Kubernetes 1.30 vs 1.31, MySQL 8.4 vs 8.0 end of support, PostgreSQL 17 preview",
    (
        "rn-nke-130",
        "Release note: NKE supports Kubernetes 1.30",
        """Release note, August 2024. Nimbus Kubernetes Engine now supports Kubernetes 1.30.1 for new
        clusters and upgrades in all commercial regions. With this release, support for 1.27 ends on 30
        September 2024: clusters still on 1.27 keep running, but they cannot create node pools with 1.27
        and no longer receive patches. The default version for Quick create changes to 1.30. Node images
        for 1.30 use cgroup v2 only, so workloads that need cgroup v1 must be updated first. NKE supports
        the three most recent minor versions at any time.""",
    ),
    (
        "rn-nke-131",
        "Release note: NKE supports Kubernetes 1.31",
        """Release note, December 2024. Kubernetes 1.31.1 is available on Nimbus Kubernetes Engine for basic
        and enhanced clusters. Support for 1.28 ends on 31 January 2025. Changes on NKE with this version:
        the in-tree cloud provider is removed, so persistent volumes must use the Nimbus CSI driver and
        existing flexvolume storage classes stop working after the upgrade; AppArmor profiles are set in
        the securityContext field instead of annotations. Upgrade node pools after the control plane;
        virtual node pools are upgraded automatically within 30 days.""",
    ),
    (
        "rn-mysql-84",
        "Release note: MySQL 8.4 LTS on Nimbus Database for MySQL",
        """Release note, July 2024. MySQL 8.4.0 LTS is available for new DB systems and as an upgrade target
        from 8.0. 8.4 is a long-term support release that only receives bug and security fixes. Check
        before upgrading: the mysql_native_password authentication plugin is disabled by default, so
        clients that cannot use caching_sha2_password fail to connect; several replication terms are
        renamed, as in SHOW REPLICA STATUS; and the default value of innodb_io_capacity changes. The
        upgrade from 8.0 to 8.4 is started from the DB system's Edit page and restarts the server; there
        is no downgrade.""",
    ),
    (
        "rn-mysql-80-eol",
        "Release note: end of support for MySQL 8.0 DB systems",
        """Release note, January 2025. MySQL 8.0 reaches end of support on Nimbus Database for MySQL on 30
        April 2026, in line with the upstream end of life. After that date, DB systems still on 8.0 are
        upgraded automatically to 8.4 LTS in their maintenance window. Until then, 8.0 DB systems keep
        receiving security patches as 8.0 minor versions. MySQL that you run yourself on compute instances
        is not affected and is never upgraded by Nimbus. Test the upgrade first on a copy restored from a
        backup.""",
    ),
    (
        "rn-pg-17",
        "Release note: PostgreSQL 17 preview",
        """Release note, November 2024. PostgreSQL 17 is available as a preview on Nimbus Database for
        PostgreSQL in eu-central-1 and na-east-1. Preview clusters are not covered by the SLA, cannot be
        upgraded in place to the generally available release, and are limited to two per tenancy. Major
        version upgrades from 16 to 17 are not supported yet; create a new cluster and migrate with
        logical replication. General availability is planned for the first quarter of 2025, when version
        17 will also come to the other commercial regions.""",
    ),
)

# =============================================================================================
# Scaling, containers, events, file and block storage details, support
# =============================================================================================

family(
    "autoscaling",
    "Scaling out: instance pool autoscaling vs NKE cluster autoscaler vs Horizontal Pod Autoscaler vs Functions",
    (
        "pool-autoscale",
        "Autoscaling instance pools",
        """An instance pool launches identical instances from an instance configuration, and autoscaling
        changes its size automatically. Metric-based policies add or remove instances when the average CPU
        or memory utilization of the pool crosses a threshold; schedule-based policies set the size at
        given times, for example to scale up before business hours. Each policy has a minimum, maximum and
        initial size. After a scaling action, a cooldown of at least 300 seconds passes before the next
        one. Scale-in terminates the newest instances first, so keep no state on them. Attach the pool to
        a load balancer to register new instances automatically.""",
    ),
    (
        "nke-autoscaler",
        "Cluster autoscaler for NKE node pools",
        """The Kubernetes cluster autoscaler adds nodes to an NKE node pool when pods cannot be scheduled for
        lack of resources, and removes nodes that stay underused for ten minutes. Install it as a cluster
        add-on from the console, then list the node pools it manages with a minimum and maximum size, such
        as 3 to 20. The autoscaler calls the Nimbus API with workload identity or instance principals, so
        it needs a policy to manage node pools in the compartment. It does not react to CPU usage; pods
        need resource requests. Virtual node pools do not need the cluster autoscaler.""",
    ),
    (
        "hpa",
        "Scale pods with the Horizontal Pod Autoscaler on NKE",
        """The Horizontal Pod Autoscaler changes the number of replicas of a Deployment based on metrics. NKE
        clusters do not include the metrics server, so install it first from the add-ons page; without it,
        kubectl get hpa shows unknown for the targets. Then create the autoscaler, for example kubectl
        autoscale deployment web --cpu-percent=70 --min=2 --max=10. Pods must declare CPU requests, or
        the percentage cannot be computed. When new replicas do not fit on the existing nodes they stay
        Pending, and that is when the cluster autoscaler adds nodes.""",
    ),
    (
        "fn-scaling",
        "How Nimbus Functions scales",
        """Functions scale without any configuration: each concurrent invocation runs in its own container,
        and Nimbus starts more containers as calls arrive. The limit is the total memory of functions
        running at the same time, per tenancy and region, 60 GB by default. Above it, invocations fail with
        429 TooManyRequests and the message Out of capacity for function, and callers should retry with
        backoff. Request a limit increase for sustained load, and use provisioned concurrency to keep
        containers ready for bursts. Unlike instance pools, functions have no minimum or maximum size
        settings.""",
    ),
)

family(
    "registry",
    "Container Registry: push vs pull from NKE vs retention vs scanning",
    (
        "ocir-push",
        "Push an image to Nimbus Container Registry",
        """To push an image: 1. Log in with docker login <region-key>.ncr.io, using the user name
        <namespace>/<user-name> (for federated users <namespace>/<identity-provider>/<user-name>) and an
        auth token as the password. 2. Tag the image as <region-key>.ncr.io/<namespace>/<repo>:<tag>, for
        example fra.ncr.io/acme/web:1.4. 3. Run docker push. If the repository does not exist, it is
        created as a private repository in the root compartment, unless you create it first in another
        compartment. The error denied: requested access to the resource is denied usually means a wrong
        namespace or a missing permission to manage repos.""",
    ),
    (
        "ocir-pull-nke",
        "Pull private images from Container Registry in NKE",
        """Pods on NKE pull private images with an image pull secret or, on enhanced clusters, without a
        secret by using the node's instance principal. For the secret, run kubectl create secret
        docker-registry ncr-secret with the registry server such as fra.ncr.io, the user name
        <namespace>/<user> and an auth token as password, then list it under imagePullSecrets. ErrImagePull
        with 401 Unauthorized means the token or user name is wrong; 403 or not found means the image path
        has a wrong namespace or region key. For the secretless option, allow the worker nodes' dynamic
        group to read repos in the compartment.""",
    ),
    (
        "ocir-retention",
        "Image retention policies in Container Registry",
        """Container Registry keeps every image you push until you delete it, and you pay for the storage.
        Retention policies clean up automatically: set them per compartment with rules such as delete
        untagged images after 7 days or delete images not pulled for 90 days, with exemptions for tags
        that match patterns like release-*. The policy runs once a day. The registry does not know which
        images NKE nodes use, so an aggressive policy can break a later pull on a new node. A repository
        holds up to 500 images by default, and pushing the 501st fails until old ones are deleted.""",
    ),
    (
        "ocir-scan",
        "Vulnerability scanning for container images",
        """Enable image scanning on a repository to check images for known vulnerabilities (CVEs) in
        operating system packages and language libraries. Scans run when an image is pushed and again
        daily for 30 days, because new CVEs are published after the push. Results list each CVE with its
        severity and the package version that fixes it. Scanning is free. A scan does not block pulls by
        itself: to stop vulnerable images from being deployed, enable image signing and an admission
        policy in NKE that only admits signed images, and sign images only after their scan passes.""",
    ),
)

family(
    "events",
    "Reacting to things: Notifications vs Events rules vs Connector Hub vs Queue",
    (
        "notifications",
        "Notifications topics and subscriptions",
        """The Notifications service delivers every message published to a topic to each confirmed
        subscription of that topic: email, SMS, Slack, PagerDuty, HTTPS endpoints and functions. Email and
        HTTPS subscriptions stay pending until the recipient confirms them, and pending subscriptions
        receive nothing. Alarms, budgets and Events rules publish to topics, and applications can publish
        their own messages of up to 64 KB with the PublishMessage API. Delivery is retried for up to two
        hours, after which the message is dropped. The first million HTTPS deliveries and 1,000 emails a
        month are free.""",
    ),
    (
        "events",
        "Events rules",
        """The Events service emits an event when a resource changes state, such as an object being created
        in a bucket, an instance terminating or a backup completing. A rule matches events by type and
        optional attributes, for example the object create event where the bucket name is uploads, and
        sends them to an action: a Notifications topic, a stream in Streaming, or a function. Buckets emit
        object events only if Emit object events is enabled on the bucket. Events are delivered at least
        once, so actions must tolerate duplicates. The Events service is free.""",
    ),
    (
        "connector-hub",
        "Connector Hub",
        """Connector Hub moves data between Nimbus services continuously, without code. A connector has a
        source (Logging, Streaming, Monitoring or Queue), optional tasks (a log filter, or a function that
        transforms the data) and a target (Object Storage, Streaming, Logging Analytics, Monitoring,
        Notifications or Functions). Typical uses are archiving audit and service logs to a bucket for
        longer than the Logging retention, or sending logs to a third-party SIEM through a stream.
        Connector Hub needs policies that let it read the source and write to the target, and the console
        offers to create them.""",
    ),
    (
        "queue",
        "Queue service",
        """Nimbus Queue is a serverless message queue for decoupling producers and consumers. A consumer gets
        messages with a visibility timeout: a message that is not deleted before the timeout becomes
        visible again and goes to another consumer. Messages of up to 256 KB are kept for 1 to 7 days.
        After a configurable number of failed deliveries a message moves to the dead letter queue. Unlike
        Streaming, messages are removed once consumed, there is no replay and there are no partitions,
        and ordering is not guaranteed unless you use channels. Billing is per million requests, with the
        first million free each month.""",
    ),
)

family(
    "file-storage",
    "File Storage access: mounting on Linux vs Windows, export options, mount timeouts",
    (
        "fss-mount",
        "Mount a File Storage file system on Linux",
        """File Storage exports file systems over NFSv3 through a mount target, which has a private IP
        address in a subnet of your VCN. 1. Create the file system and the mount target, and note the
        export path, such as /shared. 2. Allow TCP ports 111 and 2048 to 2050 and UDP ports 111 and 2048
        from the clients to the mount target. 3. On the client, install nfs-utils and run sudo mount -t nfs
        -o nfsvers=3 10.0.1.25:/shared /mnt/shared. 4. To mount at boot, add a line to /etc/fstab with the
        _netdev option, so that booting does not hang while the network is not ready.""",
    ),
    (
        "fss-mount-hang",
        "mount.nfs: Connection timed out when mounting File Storage",
        """A mount that hangs and ends with mount.nfs: Connection timed out means the client cannot reach the
        mount target. The usual cause is security rules: the mount target's subnet or NSG must allow
        ingress on TCP 111 and 2048 to 2050 and UDP 111 and 2048 from the client, and stateless rules need
        matching egress rules. Also check that client and mount target are in the same VCN, or connected
        by peering or VPN with routes, and that the client uses NFSv3, since NFSv4 mounts are rejected.
        The message access denied by server instead means the export options exclude the client's
        IP.""",
    ),
    (
        "fss-export-options",
        "Export options for File Storage",
        """Export options control which clients can mount an export and what they may do. Each rule lists a
        source CIDR, the access (read/write or read-only), whether a privileged source port is required,
        and identity squash: none, root (root becomes nobody) or all. Rules are evaluated in order and the
        first match wins. The default export allows read/write from 0.0.0.0/0 without squash, so any
        client that can reach the mount target has full access; narrow it in production. Export options
        work together with security rules and do not replace them.""",
    ),
    (
        "fss-windows",
        "Mount File Storage from Windows",
        """Windows clients mount File Storage with the Client for NFS feature. Install it from Server Manager
        or with Install-WindowsFeature NFS-Client, then run mount.exe -o anon 10.0.1.25:/shared Z:. File
        Storage does not speak SMB; for Windows file shares with Active Directory permissions, run a
        Windows file server on an instance instead. By default Windows maps every user to the anonymous
        UID -2, so its files appear owned by nobody on Linux; set AnonymousUid and AnonymousGid in the
        registry to map them to a real UID. In-transit encryption is not available on Windows.""",
    ),
)

family(
    "block-attach",
    "Attaching block volumes: paravirtualized vs iSCSI vs shareable multi-attach, and fstab at boot",
    (
        "bv-attach-pv",
        "Attach a block volume with a paravirtualized attachment",
        """A paravirtualized attachment is the simplest way to attach a block volume to a virtual machine.
        Open the instance, click Attach block volume, choose the volume and Paravirtualized, and the disk
        appears in the operating system without further commands, as /dev/sdb or under the consistent
        device path you picked, such as /dev/nimbus/vol1. It works with Linux and Windows images and
        supports in-transit encryption. The virtualization layer adds a small overhead, so for the highest
        IOPS iSCSI can be faster. Bare metal instances do not support paravirtualized attachments.""",
    ),
    (
        "bv-attach-iscsi",
        "Attach a block volume with iSCSI",
        """With an iSCSI attachment the instance talks to the storage directly over iSCSI, which gives the
        best performance and is the only option on bare metal instances. After you attach the volume in
        the console, the OS does not see the disk until you run the iscsiadm commands shown under the
        attachment's iSCSI commands and information: create the node, set automatic startup, then log in.
        The Block Volume Management plugin of the Nimbus agent can run them for you. Ultra High
        Performance volumes need multipath iSCSI attachments. Before detaching, run the disconnect
        commands, or the OS may hang.""",
    ),
    (
        "bv-multiattach",
        "Attach one block volume to several instances",
        """A block volume can be attached to up to 32 instances at once in read/write shareable or read-only
        shareable mode. Shareable read/write attachments do not coordinate writes: mounting an ordinary
        file system such as ext4 or XFS on two instances at the same time corrupts it. Use a cluster file
        system such as OCFS2 or GFS2, or an application that manages shared disks, such as a clustered
        database. For plain file sharing between instances, File Storage over NFS is easier. All instances
        must be in the volume's availability zone. Read-only attachments can be mounted on many instances
        safely.""",
    ),
    (
        "bv-fstab",
        "Instance does not boot after adding a block volume to /etc/fstab",
        """If an instance hangs at boot or drops into emergency mode after you added a block volume to
        /etc/fstab, the volume was probably not available early enough. Always refer to the volume by UUID
        or by its consistent device path, never as /dev/sdb, because device names can change between
        boots. For iSCSI volumes add _netdev, so the mount waits for the network, and nofail, so booting
        continues if the volume is missing. To recover, connect through the serial console, boot into
        maintenance mode and comment out the line.""",
    ),
)

family(
    "support",
    "Support plans vs support requests vs the Compute and Object Storage SLAs",
    (
        "support-plans",
        "Support plans",
        """Every tenancy includes Basic support: documentation, community forums, and support requests about
        billing and accounts only. Developer support adds technical requests during business hours, with a
        first response within 12 hours. Business support adds 24/7 access, phone support and a first
        response within one hour when a production system is down (severity 1). Enterprise support adds a
        technical account manager and a 15-minute response for severity 1. Support plans are billed
        monthly as a percentage of usage with a minimum fee, and can be changed at any time.""",
    ),
    (
        "support-request",
        "Open a technical support request",
        """Open a request from the Help menu of the console with Create support request. Choose the service,
        the severity and the affected resource, and include the nimbus-request-id of failing API calls,
        timestamps with time zone, and what you have already tried. Severity 1 means production is down
        with no workaround, and it needs a contact available around the clock, otherwise the request is
        downgraded. Technical requests need Developer support or higher; with Basic support the request
        type list only offers billing and account. Service limit increases are not support requests:
        request them on the Limits page.""",
    ),
    (
        "sla-compute",
        "Service level agreement for Compute and Block Volume",
        """Nimbus commits to 99.95% monthly availability for virtual machine instances deployed in two or
        more availability zones, or fault domains in a single-zone region, and to 99.99% for Block Volume.
        If availability falls below the commitment, you can claim a service credit of 10% of the monthly
        charge for the affected service, or 25% below 99%, within 60 days. The SLA does not cover
        preemptible instances, trial tenancies, maintenance announced in advance, or outages caused by
        your own configuration. Credits go to future invoices; they are not refunds.""",
    ),
    (
        "sla-object",
        "Service level agreement for Object Storage",
        """The Standard tier of Object Storage has a 99.9% monthly availability commitment, measured as the
        share of successful requests in five-minute intervals, and is designed for eleven nines of
        durability. Infrequent Access and Archive have a 99% commitment. Service credits are 10% of the
        monthly Object Storage charge below the commitment and 25% below 95%. Requests that fail with a
        5xx server error count as failures; 4xx errors, including 429 throttling after you exceed request
        limits, do not. Claim credits through a support request within 60 days.""",
    ),
)


# =============================================================================================
# Queries: phrased the way users ask, each naming its relevant documents by slug
# =============================================================================================

QUERIES: list[tuple[str, str, tuple[str, ...]]] = []  # (split, text, relevant slugs)


def ask(split: str, text: str, *slugs: str) -> None:
    QUERIES.append((split, text, slugs))


# mysql
ask("train", "backing up mysql that I installed on my own vm", "mysql-selfhosted-backup")
ask("train", "restore mysql db to the moment before someone dropped a table", "mysql-managed-backup")
ask("train", "move on-prem mysql to nimbus with minimal downtime", "mysql-migrate-onprem")
ask("test", "does the mysql endpoint ip change after a failover", "mysql-managed-ha")
ask("test", "run mysql myself instead of using the managed database service", "mysql-selfhosted-install")
# postgresql
ask("train", "pg_upgrade 14 to 16 on my own server", "pg-selfhosted-upgrade")
ask("train", "can I use plpython3u on managed postgres", "pg-managed-extensions")
ask("train", "postgres cluster refuses new sessions during peak traffic", "pg-managed-connections")
ask("test", "how long is postgres down during a major version upgrade on the managed service", "pg-managed-upgrade")
ask("test", "managed postgres with read replicas and a reader endpoint", "pg-managed-create")
# kubernetes
ask("train", "error: You must be logged in to the server (Unauthorized)", "nke-unauthorized")
ask("train", "upgrade the control plane of a cluster we built with kubeadm", "k8s-kubeadm-upgrade")
ask("train", "daemonset not running on serverless nodes", "nke-virtual-nodes")
ask("train", "create a managed kubernetes cluster the quick way", "nke-create")
ask("test", "go from 1.28 to 1.30 on NKE", "nke-upgrade")
ask("test", "run our own kubernetes control plane on VMs", "k8s-kubeadm")
# kafka
ask("train", "what goes in sasl.jaas.config for a kafka producer talking to streaming", "streaming-kafka-client")
ask("train", "which kafka offering supports log compaction and kafka connect", "kafka-managed")
ask("train", "how far can we scale a managed kafka cluster", "kafka-managed-limits")
ask("train", "kafka on our own instances with KRaft controllers", "kafka-selfhosted")
ask("test", "change stream retention to 14 days", "streaming-overview")
# cache
ask("train", "redis-cli connection reset by peer", "cache-connect-troubleshoot")
ask("train", "writes to managed redis rejected once it is full", "cache-eviction")
ask("train", "managed redis without tls possible?", "cache-managed-create")
ask("test", "redis with AOF persistence and modules", "redis-selfhosted")
# vcn-vnic
ask("train", "what is the difference between a VCN and a VNIC", "vcn-overview", "vnic-overview")
ask("train", "second network interface on linux not getting any traffic", "vnic-secondary")
ask("train", "no room left in 10.0.0.0/16 for new subnets", "vcn-cidr")
ask("test", "instance in private subnet cannot get a public ip", "subnet-regional")
ask("test", "NAT instance drops forwarded packets", "vnic-skip-sd")
# firewalls
ask("train", "block sql injection attacks on my website", "waf-overview")
ask("train", "users get 403 forbidden with a request id", "waf-403")
ask("train", "IDS/IPS for traffic between subnets", "netfw")
ask("train", "firewall rules that follow instances instead of subnets", "nsg")
ask("test", "limit on ingress rules per subnet", "security-lists")
ask("test", "ssh works but port 8080 times out", "connect-timeout-port")
# iam
ask("train", "let a VM read secrets without storing credentials on it", "iam-dynamic-groups")
ask("train", "give users of a partner company access to our tenancy", "iam-roles")
ask("train", "NotAuthorizedOrNotFound but the bucket definitely exists", "iam-notauthorized")
ask("test", "policy to let a group read only one bucket", "iam-policy")
ask("test", "how deep can compartments be nested", "iam-users-groups")
# credentials
ask("train", "docker login password for the registry", "cred-auth-tokens", "ocir-push")
ask("train", "access key and secret key for rclone", "cred-customer-secret")
ask("train", "which password does my app use to send mail through nimbus", "cred-smtp")
ask("test", "how many API keys can one user have", "cred-api-keys")
# gateways
ask("train", "private instances need yum updates from the internet", "natgw")
ask("train", "reach object storage from a private subnet without internet access", "sgw")
ask("train", "connect two VCNs in the same region", "lpg")
ask("train", "instance in public subnet has no internet, which route do I add", "igw")
ask("test", "hub and spoke network with on-prem connectivity", "drg")
# backup
ask("train", "automatic daily snapshots of my data disk", "block-backup")
ask("train", "how do I back up an object storage bucket", "object-protect")
ask("train", "restore a single deleted file from an NFS share", "file-snapshots")
ask("test", "roll back my VM's OS disk to last week", "boot-backup")
ask("test", "DR copy of a file system in another region", "file-replication")
# resize
ask("train", "extend disk without downtime", "block-resize")
ask("train", "df shows 8 EB for my nfs mount", "file-size")
ask("train", "managed mysql ran out of disk space, can I make it bigger", "db-storage-resize")
ask("test", "root filesystem full, grow the os disk", "boot-resize")
ask("test", "add more RAM to my VM", "instance-resize")
# encryption
ask("train", "use my own key to encrypt bucket data", "object-encrypt")
ask("train", "is data between my VM and the shared file system encrypted on the wire", "file-encrypt")
ask("train", "switch an existing mysql db system to a vault key", "db-encrypt")
ask("test", "customer managed key for a volume", "block-encrypt")
# load-balancers
ask("train", "backend needs to see the real client ip", "nlb")
ask("train", "502 bad gateway from the load balancer", "lb-health")
ask("train", "load balancer for an http app with url based routing", "lb-flexible")
ask("test", "two websites with different certificates behind one load balancer", "lb-cert")
# object-api
ask("train", "list more than 1000 objects, how do I page", "objapi-v1-list")
ask("train", "multipart part size 5 MiB checksum header", "objapi-v2-multipart")
ask("train", "when will the v1 object storage api be turned off", "objapi-v1-retire")
ask("test", "400 InvalidParameter when passing page token to list objects", "objapi-v2-list")
ask("test", "etag of a multipart object is not the md5", "objapi-v1-multipart")
# cli
ask("train", "where does cli 3 keep its config", "cli-v3-config")
ask("train", "my script that parses cli output broke after upgrading", "cli-v3-breaking")
ask("train", "install cli on windows", "cli-install")
ask("test", "select a profile in the old ini config file", "cli-v2-config")
# metadata
ask("train", "curl 169.254.169.254 returns 401", "imds-v2")
ask("train", "startup script never ran when the VM launched", "cloud-init")
ask("train", "read my own key value pairs from inside the instance", "instance-custom-metadata")
ask("test", "protect instance metadata from SSRF", "imds-v1", "imds-v2")
# regions
ask("train", "which regions have the big nvidia cards", "gpu-regions")
ask("train", "how many OCPUs can we start with in Germany", "limits-eu")
ask("train", "can I change my home region", "region-subscribe")
ask("test", "peer a VCN in the sovereign region with Frankfurt", "sovereign")
ask("test", "how many cores does a new tenancy get in Ashburn", "limits-na")
# storage-pricing
ask("train", "restoring old backups from cold storage, how long does it take", "obj-archive-pricing")
ask("train", "how much does a 1 TB disk cost per month", "block-perf-pricing")
ask("train", "deleted an object after 10 days but billed for a month", "obj-ia-pricing")
ask("test", "price per GB for nfs storage", "file-pricing")
ask("test", "free outbound transfer allowance for object storage", "obj-standard-pricing")
# compute-pricing
ask("train", "am I charged for a stopped GPU instance", "compute-ondemand")
ask("train", "cheap interruptible VMs for CI runners", "compute-preemptible")
ask("train", "guarantee capacity for disaster recovery", "compute-capacity-reservation")
ask("train", "how many free arm cores", "compute-free-tier")
ask("test", "do you have reserved instance pricing", "compute-commit")
# governance
ask("train", "launch fails in the dev compartment although the tenancy still has cores left", "compartment-quotas")
ask("train", "can nimbus shut things down when we hit our monthly spending cap", "budgets")
ask("train", "split the bill by project", "cost-analysis")
ask("test", "400 LimitExceeded standard-e5-core-count", "service-limits")
# observability
ask("train", "who deleted my bucket", "audit")
ask("train", "memory usage metric missing for my instance", "monitoring-metrics")
ask("train", "find which rule drops packets", "flow-logs")
ask("train", "ship nginx logs to nimbus", "logging")
ask("test", "alert shows no data instead of firing when the server died", "alarms")
# serverless
ask("train", "my serverless code gets killed after half a minute", "functions-timeout")
ask("train", "long running batch job, too long for functions", "container-instances")
ask("train", "max memory for a function", "functions-overview")
ask("test", "first call to my function takes 5 seconds", "functions-coldstart")
# dns
ask("train", "records not resolving after creating the zone", "dns-public-zone")
ask("train", "resolve on-prem hostnames from the VCN", "dns-private")
ask("train", "dns failover between two regions", "dns-steering")
ask("test", "lookup by name works inside my VCN but not for machines in the other VCN", "dns-peered-troubleshoot")
# object-access
ask("train", "share a file temporarily with someone who has no account", "par")
ask("train", "browser upload from my javascript app to the bucket is blocked", "cors")
ask("train", "host website images in object storage without any login", "public-bucket")
ask("test", "aws sdk virtual hosted style bucket url not working", "s3-compat")
# vault
ask("train", "after rotating the encryption key do old objects still use the previous one", "vault-rotation")
ask("train", "store the database password for my app", "vault-secrets")
ask("train", "auditors want our keys in an HSM we don't share with other customers", "vault-types")
ask("test", "HSM vs software key", "vault-keys")
# instance-access
ask("train", "Permission denied (publickey) on ubuntu instance", "ssh-publickey")
ask("train", "ssh into an instance without a public ip", "bastion")
ask("train", "how do I log in to my new windows server, there is no ssh key", "rdp-windows")
ask("train", "can't ssh anymore, it just hangs", "ssh-timeout")
ask("test", "locked out after a firewall change", "serial-console")
# hybrid
ask("train", "VPN to our datacenter won't come up, IKE settings mismatch?", "vpn-troubleshoot")
ask("train", "ship 300 TB to the cloud", "transfer-appliance")
ask("train", "dedicated 10 Gbps private line to nimbus", "fastconnect")
ask("train", "quick encrypted link from the office network to a VCN", "vpn")
ask("test", "fastest way to upload 5 TB of files", "transfer-online")
# releases
ask("train", "when does NKE stop supporting 1.27", "rn-nke-130")
ask("train", "old mysql clients can't log in after moving to the new LTS", "rn-mysql-84")
ask("train", "can we try the newest postgres version", "rn-pg-17")
ask("train", "will nimbus force-upgrade our mysql 8.0 database", "rn-mysql-80-eol")
ask("test", "flexvolume storage class broken after kubernetes upgrade", "rn-nke-131")
# autoscaling
ask("train", "kubectl get hpa shows unknown targets", "hpa")
ask("train", "add web servers automatically when cpu is high", "pool-autoscale")
ask("train", "429 Out of capacity for function", "fn-scaling")
ask("test", "pending pods, add nodes automatically", "nke-autoscaler")
# registry
ask("train", "denied: requested access to the resource is denied on docker push", "ocir-push")
ask("train", "ErrImagePull 401 Unauthorized private image", "ocir-pull-nke")
ask("train", "security check of our images before they get deployed to kubernetes", "ocir-scan")
ask("test", "registry storage bill keeps growing", "ocir-retention")
# events
ask("train", "trigger a function when a file is uploaded to a bucket", "events")
ask("train", "archive audit logs to a bucket for more than a year", "connector-hub")
ask("train", "consumer crashed halfway through a message, will another worker get it", "queue")
ask("test", "email subscription not receiving messages", "notifications")
# file-storage
ask("train", "nfs mount hangs forever", "fss-mount-hang")
ask("train", "mount nfs share on windows server", "fss-windows")
ask("train", "fstab entry for file storage nfs mount", "fss-mount")
ask("test", "root squash for nfs export", "fss-export-options")
# block-attach
ask("train", "share one disk between two VMs", "bv-multiattach")
ask("train", "VM won't come up after I set the new disk to mount automatically", "bv-fstab")
ask("train", "attach a volume without running iscsiadm", "bv-attach-pv")
ask("test", "attached volume not showing in lsblk on bare metal", "bv-attach-iscsi")
# support
ask("train", "how fast does support answer when production is down", "support-plans")
ask("train", "can't choose technical issue in support request", "support-request")
ask("train", "compute uptime SLA", "sla-compute")
ask("test", "SLA credits for object storage 429 errors", "sla-object")


# =============================================================================================
# Checks and output
# =============================================================================================


def check() -> list[str]:
    """Every rule the README promises; returns the problems found (empty when all hold)."""
    problems: list[str] = []
    by_slug: dict[str, Document] = {}
    titles: set[str] = set()
    for doc in DOCUMENTS:
        if doc.slug in by_slug:
            problems.append(f"duplicate slug {doc.slug}")
        by_slug[doc.slug] = doc
        if doc.title in titles:
            problems.append(f"duplicate title {doc.title!r}")
        titles.add(doc.title)
        words = len(doc.text.split())
        if not MIN_WORDS <= words <= MAX_WORDS:
            problems.append(f"{doc.slug}: {words} words (want {MIN_WORDS}-{MAX_WORDS})")
    for key in FAMILIES:
        size = sum(d.family == key for d in DOCUMENTS)
        if not MIN_FAMILY <= size <= MAX_FAMILY:
            problems.append(f"family {key}: {size} documents (want {MIN_FAMILY}-{MAX_FAMILY})")
    seen_text: set[str] = set()
    splits_of: dict[str, set[str]] = {key: set() for key in FAMILIES}
    for split, text, slugs in QUERIES:
        if split not in ("train", "test"):
            problems.append(f"query {text!r}: unknown split {split}")
        if text.lower() in seen_text:
            problems.append(f"duplicate query {text!r}")
        seen_text.add(text.lower())
        if not 1 <= len(slugs) <= 2 or len(set(slugs)) != len(slugs):
            problems.append(f"query {text!r}: want 1-2 distinct relevant documents, got {slugs}")
        for slug in slugs:
            if slug not in by_slug:
                problems.append(f"query {text!r}: unknown document {slug}")
            else:
                splits_of[by_slug[slug].family].add(split)
    for key, splits in splits_of.items():
        if splits != {"train", "test"}:
            problems.append(f"family {key}: queries only in {sorted(splits) or 'no split'}")
    return problems


def build(out: Path = HERE) -> dict[str, int]:
    """Check, then write the BEIR files under `out`; returns the counts."""
    problems = check()
    if problems:
        raise SystemExit("refusing to build:\n  " + "\n  ".join(problems))
    doc_id = {d.slug: f"doc-{i:04d}" for i, d in enumerate(DOCUMENTS, 1)}
    corpus = [{"_id": doc_id[d.slug], "title": d.title, "text": d.text} for d in DOCUMENTS]
    queries = [{"_id": f"q-{i:04d}", "text": text} for i, (_, text, _) in enumerate(QUERIES, 1)]
    qrels: dict[str, list[str]] = {"train": [], "test": []}
    for i, (split, _, slugs) in enumerate(QUERIES, 1):
        qrels[split] += [f"q-{i:04d}\t{doc_id[s]}\t1" for s in slugs]

    def jsonl(rows: list[dict[str, str]]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text(jsonl(corpus), encoding="utf-8")
    (out / "queries.jsonl").write_text(jsonl(queries), encoding="utf-8")
    for split, rows in qrels.items():
        (out / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(r + "\n" for r in rows), encoding="utf-8"
        )
    n_train = sum(s == "train" for s, _, _ in QUERIES)
    return {
        "documents": len(corpus),
        "families": len(FAMILIES),
        "queries": len(queries),
        "train_queries": n_train,
        "test_queries": len(queries) - n_train,
        "train_pairs": len(qrels["train"]),
        "test_pairs": len(qrels["test"]),
    }


if __name__ == "__main__":
    counts = build()
    print(" ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)

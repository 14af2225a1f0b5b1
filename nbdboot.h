/*
 * nbdboot.h - protocol and kernel constants, wire layouts, and the internal
 * API that nbdboot.c implements and tests/unit.c exercises.
 *
 * Read in protocol order: byte order, handshake, options, replies, info
 * types, transmission, then the kernel interface, then the internal API.
 * Nothing here comes from <linux/...>: musl-gcc has no kernel headers.
 */
#ifndef NBDBOOT_H
#define NBDBOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Byte order: the wire is big-endian ---------------------------------- */

static inline uint16_t be16_get(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t be32_get(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t be64_get(const void *p)
{
	const uint8_t *b = p;
	return (uint64_t)be32_get(b) << 32 | be32_get(b + 4);
}

static inline void be16_put(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static inline void be32_put(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

static inline void be64_put(void *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put((uint8_t *)p + 4, (uint32_t)v);
}

/* ---- Handshake ------------------------------------------------------------ */

#define NBD_MAGIC          0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_OLDSTYLE_MAGIC 0x00420281861253ULL
#define NBD_IHAVEOPT       0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC      0x0003e889045565a9ULL

#define NBD_DEFAULT_PORT "10809"

/* Handshake flags (server, u16) and client flags (u32). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Oldstyle greeting after the two magics: u64 size, u32 flags, 124 zeroes. */
#define NBD_OLDSTYLE_REST   (8 + 4 + 124)
#define NBD_ZEROES_LEN      124
/* EXPORT_NAME answer: u64 size, u16 flags, then 124 zeroes unless NO_ZEROES. */
#define NBD_EXPORT_NAME_REPLY_LEN (8 + 2)

/* ---- Options -------------------------------------------------------------- */

#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* Option request header: u64 IHAVEOPT, u32 option, u32 length. */
#define NBD_OPT_HDR_LEN 16

/* ---- Option replies ------------------------------------------------------- */

/* Reply header: u64 magic, u32 option, u32 type, u32 length. */
#define NBD_REP_HDR_LEN 20

#define NBD_REP_ACK          1
#define NBD_REP_SERVER       2
#define NBD_REP_INFO         3
#define NBD_REP_META_CONTEXT 4

#define NBD_REP_FLAG_ERROR       (1u << 31)
#define NBD_REP_ERR_UNSUP        (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY       (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID      (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM     (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD     (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN      (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN     (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG      (NBD_REP_FLAG_ERROR | 9)
#define NBD_REP_ERR_EXT_HEADER_REQD (NBD_REP_FLAG_ERROR | 10)

/* Bounds on what a server may send us. */
#define NBD_STRING_MAX   4096 /* a name or description, spec's hard limit */
#define NBD_SHOW_MAX     200  /* server text shown on the console */
#define NBD_ERRMSG_MAX   NBD_STRING_MAX
#define NBD_SERVER_MAX   (4 + NBD_STRING_MAX + NBD_STRING_MAX) /* LIST entry */
#define NBD_INFO_MAX     (2 + NBD_STRING_MAX) /* INFO_NAME/DESCRIPTION */
#define NBD_REPLY_MAX    NBD_SERVER_MAX /* receive buffer, largest of above */
#define NBD_REPLIES_MAX  4096 /* replies to one option before we give up */

/* ---- Info types (NBD_REP_INFO payload starts with u16 type) -------------- */

#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

#define NBD_INFO_EXPORT_LEN     (2 + 8 + 2)
#define NBD_INFO_BLOCK_SIZE_LEN (2 + 4 + 4 + 4)

#define NBD_BLOCK_MIN_MAX  65536u  /* largest minimum block size allowed */
#define NBD_BLOCK_PREF_MIN 512u
#define NBD_BLOCK_MAX_ANY  0xffffffffu

/* ---- Transmission --------------------------------------------------------- */

#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Request: u32 magic, u16 flags, u16 type, u64 handle, u64 offset, u32 len. */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_REQUEST_LEN   28
#define NBD_CMD_DISC      2

/* Sizes the kernel's loff_t can hold; anything larger is absurd. */
#define NBD_SIZE_MAX ((uint64_t)INT64_MAX)

/* ---- Kernel: ioctls on /dev/nbdN (_IO(0xab, n)) -------------------------- */

#define NBD_IOC(n)            ((0xabu << 8) | (n))
#define NBD_SET_SOCK          NBD_IOC(0)
#define NBD_SET_BLKSIZE       NBD_IOC(1)
#define NBD_SET_SIZE          NBD_IOC(2)
#define NBD_DO_IT             NBD_IOC(3)
#define NBD_CLEAR_SOCK        NBD_IOC(4)
#define NBD_CLEAR_QUE         NBD_IOC(5)
#define NBD_SET_SIZE_BLOCKS   NBD_IOC(7)
#define NBD_DISCONNECT        NBD_IOC(8)
#define NBD_SET_TIMEOUT       NBD_IOC(9)
#define NBD_SET_FLAGS         NBD_IOC(10)

/* (sys/mount.h has these three too; the values are the kernel's) */
#ifndef BLKROSET
#define BLKROSET  ((0x12u << 8) | 93) /* _IO(0x12, 93) */
#endif
#ifndef BLKRRPART
#define BLKRRPART ((0x12u << 8) | 95) /* _IO(0x12, 95) */
#endif
#ifndef BLKGETSIZE64
#define BLKGETSIZE64 0x80081272u /* _IOR(0x12, 114, size_t) */
#endif

/* Other kernel constants musl's headers may lack. */
#ifndef GRND_NONBLOCK
#define GRND_NONBLOCK 0x0001
#endif
#ifndef GRND_INSECURE
#define GRND_INSECURE 0x0004 /* Linux 5.6: never blocks, even before the pool is ready */
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4 /* Linux 4.4: lock pages as they are touched */
#endif

#define NBD_KERNEL_BLOCK_MIN 512u
#define NBD_KERNEL_BLOCK_MAX 4096u /* PAGE_SIZE before Linux 6.15 */
#define NBD_DEFAULT_BLOCK    512u  /* partition tables break otherwise */

/* ---- Kernel: generic netlink family "nbd" --------------------------------- */

#define NBD_GENL_FAMILY_NAME "nbd"
#define NBD_GENL_VERSION     1
#define NBD_GENL_MCAST_GROUP "nbd_mc_group"

#define NBD_CMD_UNSPEC      0
#define NBD_CMD_CONNECT     1
#define NBD_CMD_DISCONNECT  2
#define NBD_CMD_RECONFIGURE 3
#define NBD_CMD_LINK_DEAD   4
#define NBD_CMD_STATUS      5

#define NBD_ATTR_INDEX              1
#define NBD_ATTR_SIZE_BYTES         2
#define NBD_ATTR_BLOCK_SIZE_BYTES   3
#define NBD_ATTR_TIMEOUT            4
#define NBD_ATTR_SERVER_FLAGS       5
#define NBD_ATTR_CLIENT_FLAGS       6
#define NBD_ATTR_SOCKETS            7
#define NBD_ATTR_DEAD_CONN_TIMEOUT  8
#define NBD_ATTR_DEVICE_LIST        9
#define NBD_ATTR_BACKEND_IDENTIFIER 10

#define NBD_SOCK_ITEM 1
#define NBD_SOCK_FD   1
/* STATUS's answer: DEVICE_LIST > DEVICE_ITEM > INDEX, CONNECTED (u8) */
#define NBD_DEVICE_ITEM      1
#define NBD_DEVICE_INDEX     1
#define NBD_DEVICE_CONNECTED 2

#define NBD_CFLAG_DESTROY_ON_DISCONNECT (1u << 0)
#define NBD_CFLAG_DISCONNECT_ON_CLOSE   (1u << 1)

/* Netlink framing (uapi linux/netlink.h, linux/genetlink.h). */
#define NETLINK_GENERIC     16
#define NLMSG_ERROR_TYPE    2
#define NLMSG_DONE_TYPE     3
#define NLM_F_REQUEST_FLAG  0x1
#define NLM_F_ACK_FLAG      0x4
#define NLA_F_NESTED_FLAG   (1u << 15)
#define NLA_TYPE_MASK       0x3fff
#define GENL_ID_CTRL        0x10
#define CTRL_CMD_GETFAMILY  3
#define CTRL_ATTR_FAMILY_ID   1
#define CTRL_ATTR_FAMILY_NAME 2
#define CTRL_ATTR_MCAST_GROUPS 7 /* nest of nests: */
#define CTRL_ATTR_MCAST_GRP_NAME 1
#define CTRL_ATTR_MCAST_GRP_ID   2
#define SOL_NETLINK_LEVEL      270
#define NETLINK_ADD_MEMBERSHIP_OPT 1

struct nl_hdr {
	uint32_t len;
	uint16_t type, flags;
	uint32_t seq, pid;
};
struct genl_hdr {
	uint8_t cmd, version;
	uint16_t reserved;
};
struct nl_attr {
	uint16_t len, type;
};
_Static_assert(sizeof(struct nl_hdr) == 16, "nlmsghdr is 16 bytes");
_Static_assert(sizeof(struct genl_hdr) == 4, "genlmsghdr is 4 bytes");
_Static_assert(sizeof(struct nl_attr) == 4, "nlattr is 4 bytes");
#define NL_ALIGN(n) (((n) + 3u) & ~3u)
#define NL_ATTR_SPACE(n) NL_ALIGN(4u + (n))
#define NL_ATTR_DATA_MAX (0xffffu - 4u) /* nla_len is 16 bits */
#define NL_NEST_MAX 2 /* SOCKETS > SOCK_ITEM */

/* ---- Kernel: kTLS (musl lacks linux/tls.h) -------------------------------- */

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#define TLS_TX 1
#define TLS_RX 2
#define TLS_1_2_VERSION_NUM          0x0303
#define TLS_CIPHER_AES_GCM_128       51
#define TLS_CIPHER_AES_GCM_256       52
#define TLS_CIPHER_CHACHA20_POLY1305 54
#define TLS_ALERT_CERTIFICATE_REQUIRED 116 /* TLS 1.3's; some servers send it in 1.2 */

/* struct tls12_crypto_info_* of linux/tls.h, one layout for all three:
 * AES-GCM puts the explicit nonce in iv[0..7] and the implicit part in salt;
 * ChaCha20-Poly1305 has a 12-byte iv and no salt.  The kernel is told the
 * exact size of its own struct, computed by ktls_info_len(). */
struct ktls_info {
	uint16_t version, cipher;
	uint8_t rest[12 + 32 + 4 + 8]; /* iv, key, salt, rec_seq */
};

#define NBD_TLS_ANCHORS_MAX 256
#define NBD_TLS_POOL        (96 * 1024) /* trust anchors' names and keys */
#define NBD_TLS_DER_MAX     (16 * 1024) /* one PEM object, decoded */
#define NBD_TLS_CHAIN_MAX   8
#define NBD_TLS_SEED_WAIT_MS 10000 /* for the random pool, within the step's deadline */
#define NBD_TLS_SEED_STEP_MS 100
#define NBD_PROXY_LINGER_MS  5000 /* the proxy, once the kernel let go: for close_notify */

/* ---- /init mode: rtnetlink (uapi linux/rtnetlink.h, linux/if_addr.h) -------- */

#define NETLINK_ROUTE_PROTO 0
#define RTM_NEWLINK_TYPE  16
#define RTM_NEWADDR_TYPE  20
#define RTM_NEWROUTE_TYPE 24
#define NLM_F_REPLACE_FLAG 0x100
#define NLM_F_CREATE_FLAG  0x400
#define RTMGRP_LINK_GROUP  1
#define IFA_ADDRESS_ATTR   1
#define IFA_LOCAL_ATTR     2
#define IFA_BROADCAST_ATTR 4
#define RTA_OIF_ATTR       4
#define RTA_GATEWAY_ATTR   5
#define RT_TABLE_MAIN_ID   254
#define RTPROT_BOOT_ID     3
#define RTN_UNICAST_TYPE   1
#define RTNH_F_ONLINK_FLAG 4

struct ifinfo_msg { /* struct ifinfomsg */
	uint8_t family, pad;
	uint16_t type;
	int32_t index;
	uint32_t flags, change;
};
struct ifaddr_msg { /* struct ifaddrmsg */
	uint8_t family, prefixlen, flags, scope;
	uint32_t index;
};
struct route_msg { /* struct rtmsg */
	uint8_t family, dst_len, src_len, tos, table, protocol, scope, type;
	uint32_t flags;
};
_Static_assert(sizeof(struct ifinfo_msg) == 16, "ifinfomsg is 16 bytes");
_Static_assert(sizeof(struct ifaddr_msg) == 8, "ifaddrmsg is 8 bytes");
_Static_assert(sizeof(struct route_msg) == 12, "rtmsg is 12 bytes");

/* ---- /init mode: DHCP (RFC 2131, 2132) ---------------------------------------- */

#define DHCP_SERVER_PORT 67
#define DHCP_CLIENT_PORT 68
#define DHCP_MAGIC_COOKIE 0x63825363u
#define BOOTP_REQUEST 1
#define BOOTP_REPLY   2
#define BOOTP_BROADCAST 0x8000u
#define DHCP_MIN_LEN  300 /* BOOTP's minimum message; some servers drop less */
#define DHCP_PACKET_MAX 1500 /* what nbdboot builds and reads: one Ethernet frame */

enum {
	DHCP_OPT_PAD = 0, DHCP_OPT_NETMASK = 1, DHCP_OPT_ROUTER = 3, DHCP_OPT_DNS = 6,
	DHCP_OPT_HOSTNAME = 12, DHCP_OPT_DOMAIN = 15, DHCP_OPT_ROOT_PATH = 17,
	DHCP_OPT_REQUESTED_IP = 50, DHCP_OPT_LEASE = 51, DHCP_OPT_OVERLOAD = 52,
	DHCP_OPT_TYPE = 53, DHCP_OPT_SERVER_ID = 54, DHCP_OPT_PARAMS = 55,
	DHCP_OPT_MAX_SIZE = 57, DHCP_OPT_CLIENT_ID = 61, DHCP_OPT_END = 255,
};
enum {
	DHCP_DISCOVER = 1, DHCP_OFFER = 2, DHCP_REQUEST = 3, DHCP_ACK = 5, DHCP_NAK = 6,
};

/* The fixed BOOTP part, then the magic cookie; options follow. */
struct bootp_msg {
	uint8_t op, htype, hlen, hops;
	uint32_t xid;
	uint16_t secs, flags;
	uint32_t ciaddr, yiaddr, siaddr, giaddr;
	uint8_t chaddr[16];
	uint8_t sname[64];
	uint8_t file[128];
	uint32_t magic;
};
_Static_assert(sizeof(struct bootp_msg) == 240, "BOOTP header and cookie are 240 bytes");
#define IPV4_HDR_LEN 20
#define UDP_HDR_LEN  8

/* ---- Internal API ----------------------------------------------------------- */

#define NBD_HOST_MAX    255
#define NBD_PORT_MAX    5
#define NBD_PATH_MAX    4095
/* TLS files used when the command line names none (the hooks install them) */
#define NBD_TLS_DIR  "/etc/nbdboot"
#define NBD_TLS_CA   NBD_TLS_DIR "/ca.pem"
#define NBD_TLS_CERT NBD_TLS_DIR "/cert.pem"
#define NBD_TLS_KEY  NBD_TLS_DIR "/key.pem"
#define NBD_UNIX_MAX    107 /* sun_path less the NUL */
#define NBD_DEVICE_MAX  63
#define NBD_INDEX_MAX   1048575 /* /dev/nbdN and partitions: within the kernel's minors */
#define NBD_ROOTPATH_MAX 511 /* DHCP root-path as the initramfs passes it */
#define NBD_WAIT_DEFAULT 60 /* seconds: boot networks come up slowly */
#define NBD_WAIT_MAX    86400
#define NBD_ADDRS_MAX   8 /* addresses of one name tried in turn */
#define NBD_RETRY_FIRST_MS 100  /* backoff: first step, doubling ... */
#define NBD_RETRY_MAX_MS   2000 /* ... up to this, each with random jitter */
#define NBD_GREETING_FIRST_MS 2000 /* a greeting not here by then: reconnect (doubling) */
#define NBD_GREETING_MAX_MS 16000  /* ... up to this */

/* Exit codes: the same for every mode. */
#define EXIT_SERVER 1 /* network or server failure, or not connected for -c */
#define EXIT_USAGE  2 /* bad command line or configuration */
#define EXIT_KERNEL 3 /* the kernel refused or has no nbd */

#define NBD_READY_WAIT_MS 10000 /* device size and partitions after attach */
#define NBD_READY_POLL_MS 2       /* ... looked at this often */
#define NBD_RESCAN_AFTER_MS 100   /* ... BLKRRPART when no partition after this */
#define NBD_ABORT_WAIT_MS 1000    /* NBD_OPT_ABORT: the server's answer, if any */
#define NBD_ADDR_TRY_MS   5000    /* one address of several, before the next */
#define NBD_KEEPALIVE_IDLE_S  60  /* TCP keepalive: a vanished server noticed ... */
#define NBD_KEEPALIVE_INTVL_S 10  /* ... within about two minutes of silence */
#define NBD_KEEPALIVE_PROBES  6
#define NBD_TLS_CLOSE_SENDS 8     /* close_notify: at most this many sends */
#define NBD_FDS_CLOSED 1024       /* a daemon closes the fds below this */
#define NBD_OOM_SCORE_ADJ "-1000" /* resident processes: never the OOM killer's pick */
#define NBD_KERNEL_WAIT_MS 10000 /* the kernel's netlink answers, per step */
#define NBD_CONNS_MAX 64 /* -C: connections per device */
#define NBD_FAILOVER_MAX 7 /* --failover: servers after the first */
/* Reconnecting (persist, netlink).  A root waits for its server: */
#define NBD_PERSIST_TIMEOUT 10       /* s: a request unanswered this long marks the link dead */
#define NBD_PERSIST_DEAD_TIMEOUT 600 /* s: I/O waits this long for a new connection */
#define NBD_MONITOR_STATUS_MS 5000   /* the monitor asks whether the device is still there */
#define NBD_MONITOR_GRACE_MS 1000    /* a socket shut down without LINK_DEAD: a disconnect? */
#define NBD_MONITOR_TRY_MS 10000     /* one round of connecting, between status checks */
#define NBD_MONITOR_RETRY_MS 500     /* its longest pause: a restarted server is used at once */
#define NBD_MONITOR_FAST_MS 30000    /* ... for this long, then NBD_RETRY_MAX_MS */
#define NBD_MONITOR_LATE_RETRY_MS 30000 /* ... and once the kernel has given up */

/* /init mode */
#define NBD_INIT_NEWROOT "/root"   /* where the root is mounted before switch_root */
#define NBD_INIT_RUNDIR "/run/nbdboot" /* the overlay's lower and upper layers */
#define NBD_MODFILE_MAX (256 * 1024) /* modules.dep, .alias, .softdep of an initramfs */
#define NBD_MODULES_MAX 512          /* modules listed in its modules.dep */
#define NBD_MODDEPTH_MAX 16          /* dependency and softdep nesting */
#define NBD_COLDPLUG_ROUNDS 4        /* bus drivers bring new devices (virtio) */
#define NBD_IFACES_MAX 16
#define NBD_LINK_POLL_MS 50          /* carrier looked at this often besides the events */
#define NBD_DHCP_FIRST_MS 500        /* DHCP retransmission: first wait, doubling ... */
#define NBD_DHCP_MAX_MS 8000         /* ... up to this, each with +-25% jitter */
#define NBD_HOSTNAME_MAX 63
#define NBD_DNS_MAX 3
#define NBD_PANIC_UNSET (-2)         /* nbdboot.panic= not given: the kernel's panic= */
#define NBD_SYS_OPENAT2 437          /* the same number on every architecture but alpha */
#define NBD_RESOLVE_IN_ROOT 0x10
#define NBD_RAMFS_MAGIC 0x858458f6u
#define NBD_TMPFS_MAGIC 0x01021994u

/* "nbdboot:" and the server as "[host]:port" or a socket path, the kernel's
 * backend identifier; and the largest netlink message nbdboot builds:
 * CONNECT with every attribute, the most connections, the longest identifier. */
#define NBD_IDENT_MAX (8 + (NBD_HOST_MAX + 8 > NBD_UNIX_MAX ? NBD_HOST_MAX + 8 : NBD_UNIX_MAX))
#define NL_MSG_MAX (sizeof(struct nl_hdr) + sizeof(struct genl_hdr) + NL_ATTR_SPACE(4) + \
		    5 * NL_ATTR_SPACE(8) + NL_ATTR_SPACE(0) +                          \
		    NBD_CONNS_MAX * (NL_ATTR_SPACE(0) + NL_ATTR_SPACE(4)) + NL_ATTR_SPACE(NBD_IDENT_MAX + 1))

enum nbd_mode {
	MODE_ATTACH, MODE_PROBE, MODE_LIST, MODE_CHECK, MODE_DISCONNECT,
	MODE_CMDLINE, MODE_HELP, MODE_VERSION,
};

/* Everything a run needs, filled from argv or the kernel command line. */
/* One server: host and port ("" in a --failover entry: the first server's). */
struct nbd_server {
	char host[NBD_HOST_MAX + 1];
	char port[NBD_PORT_MAX + 1];
};

struct nbd_config {
	enum nbd_mode mode;
	char host[NBD_HOST_MAX + 1];
	char port[NBD_PORT_MAX + 1];
	struct nbd_server failover[NBD_FAILOVER_MAX]; /* tried after host, in order */
	unsigned nfailover;
	char unix_path[NBD_UNIX_MAX + 1];
	bool host_is_socket; /* -u: the HOST argument is the socket path */
	char name[NBD_STRING_MAX + 1];
	char device[NBD_DEVICE_MAX + 1];
	/* TLS */
	bool tls;
	char cacert[NBD_PATH_MAX + 1];
	char cert[NBD_PATH_MAX + 1];
	char key[NBD_PATH_MAX + 1];
	char tlshostname[NBD_HOST_MAX + 1];
	bool tls_proxy; /* userspace proxy even where kTLS would work */
	/* negotiation */
	bool no_optgo;
	unsigned wait_seconds;
	/* kernel */
	uint32_t block_size; /* 0: default */
	uint32_t timeout;    /* 0: none */
	uint32_t dead_timeout; /* netlink DEAD_CONN_TIMEOUT, 0: none */
	uint32_t conns;
	bool persist;       /* reconnect when a connection dies (netlink) */
	bool persist_given; /* -p or --no-persist said so (else: on at boot only) */
	uint64_t size_override; /* 0: the server's */
	bool readonly, nofork, use_ioctl;
	bool verbose; /* -v */
	/* --cmdline: what the boot asks for beyond the export */
	char cmdline_file[NBD_PATH_MAX + 1];
	bool print_env;
	char root[NBD_DEVICE_MAX + 1];   /* device to mount: /dev/nbd0 or /dev/nbd0p1 */
	char fstype[32];
	char rootflags[256];
};

/* ip= and BOOTIF= of the kernel command line (/init mode); addresses in
 * network byte order, 0 when not given. */
struct nbd_ipconf {
	bool given;    /* an ip= was on the command line */
	bool off;      /* ip=off / none: the network is left as it is */
	bool dhcp;     /* autoconfiguration by DHCP */
	uint32_t addr, server, gateway, netmask;
	char hostname[NBD_HOSTNAME_MAX + 1];
	char device[16]; /* "" = the first interface with a carrier */
	uint32_t dns[2];
	bool has_mac;  /* BOOTIF=: the interface with this MAC address */
	uint8_t mac[6];
};

/* What a DHCP reply says (network byte order; 0 when absent). */
struct nbd_lease {
	bool for_us;  /* a reply to this client's request, usable or not */
	uint8_t type; /* DHCP_OFFER, DHCP_ACK, DHCP_NAK */
	uint32_t addr, netmask, router, server_id, siaddr;
	uint32_t dns[NBD_DNS_MAX];
	unsigned ndns;
	uint32_t lease_s;
	char hostname[NBD_HOSTNAME_MAX + 1];
	char domain[NBD_HOSTNAME_MAX + 1];
	char root_path[NBD_ROOTPATH_MAX + 1];
};

/* The /init mode's own words of the kernel command line. */
struct nbd_boot {
	struct nbd_ipconf ip;
	char init[NBD_PATH_MAX + 1]; /* init=, "" for the usual places */
	bool rw;                     /* rw (ro is the default, as the kernel's) */
	bool overlay;                /* nbdboot.overlay=tmpfs|SIZE */
	char overlay_size[32];       /* tmpfs size=, "" for tmpfs's default */
	int panic_s;                 /* nbdboot.panic=, NBD_PANIC_UNSET */
	uint32_t wait_s;             /* nbdboot.wait=: the link and DHCP together */
};

enum nbd_handshake { HS_OLDSTYLE, HS_NEWSTYLE, HS_FIXED_EXPORT_NAME, HS_FIXED_GO };

/* What negotiation learned: everything the kernel attach needs. */
struct nbd_export {
	uint64_t size;
	uint16_t flags; /* transmission flags, 0 if the server sent no HAS_FLAGS */
	bool has_block_sizes;
	uint32_t min_block, pref_block, max_block;
	enum nbd_handshake how;
	bool tls;
};

/* One connection being negotiated: socket, deadline, agreed flags. */
struct nbd_conn {
	int fd;
	int64_t deadline_ms; /* CLOCK_MONOTONIC */
	uint16_t hs_flags;   /* server's handshake flags */
	bool fixed, no_zeroes;
	uint32_t pending_client_flags; /* sent with the first option */
	bool client_flags_pending;
	bool tls_active; /* records go through the TLS engine */
	int64_t started, greeting_by; /* connected at; the greeting is due by (0: no limit) */
	bool greeting_late;           /* it was not */
};

/* The whole program: main() calls it (tests build without main). */
int nbd_main(int argc, char **argv);

/* Forget the recorded error (a new attempt starts clean). */
void nbd_error_clear(void);
/* Last error, for main() and tests: one line, no "nbdboot: " prefix. */
const char *nbd_last_error(void);
/* Exit code class of the last error (EXIT_*). */
int nbd_last_error_class(void);
/* True if the last error may clear up by retrying (network, server start). */
bool nbd_last_error_transient(void);

/* Fill cfg from argv (argv[0] excluded). 0, or -1 with a usage error. */
int nbd_parse_args(struct nbd_config *cfg, int argc, char **argv);
/* Parse an nbd://, nbds://, nbd+unix://, nbds+unix:// URI into cfg. */
int nbd_parse_uri(struct nbd_config *cfg, const char *uri);
/* Check a filled configuration for contradictions. 0 or -1. */
int nbd_config_check(const struct nbd_config *cfg);

/* Monotonic milliseconds. */
int64_t nbd_now_ms(void);

/* Negotiate on a connected socket until transmission (GO / EXPORT_NAME or
 * oldstyle); with probe, then leave the server with NBD_CMD_DISC. */
int nbd_negotiate(struct nbd_conn *c, const struct nbd_config *cfg,
		  struct nbd_export *ex, bool probe);
/* List the server's exports, calling fn for each; then ABORT. */
int nbd_list(struct nbd_conn *c, const struct nbd_config *cfg,
	     void (*fn)(const char *name, const char *desc, void *arg), void *arg);
/* Connect and negotiate, retrying transient failures until deadline (see
 * nbd_now_ms).  Returns the connected socket in transmission phase, or -1. */
int nbd_open(const struct nbd_config *cfg, int64_t deadline, struct nbd_export *ex, bool probe);

/* Fill cfg from a kernel command line (the text of /proc/cmdline):
 * dracut root=nbd:/netroot=nbd:, Debian nbdroot=/nbddev=, root=nbd(s)://
 * URIs, and nbdboot.KEY[=VALUE] options.  0, or -1 naming the parameter. */
int nbd_parse_cmdline(struct nbd_config *cfg, const char *text);
/* Apply one nbdboot option word (as in nbdboot.KEY=VALUE or NBDOPTS). */
int nbd_cmdline_option(struct nbd_config *cfg, const char *word);

/* --print-env: NAME='VALUE' lines for the shell's eval, each value exactly
 * as in cfg (single-quoted, ' written as '\'').  Returns the length the
 * whole text needs, which is complete in buf only when less than size;
 * NBD_ENV_MAX always suffices. */
#define NBD_ENV_VALUES_MAX (NBD_HOST_MAX + NBD_PORT_MAX + NBD_UNIX_MAX + NBD_STRING_MAX + \
			    2 * NBD_DEVICE_MAX + 32 + 256 + 5 * 16)
#define NBD_ENV_MAX (4 * NBD_ENV_VALUES_MAX + 15 * 24)
size_t nbd_format_env(const struct nbd_config *cfg, char *buf, size_t size);

/* ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1[:NTP] (or
 * its first fields, as the kernel takes it), or ip=off|none|on|any|dhcp|
 * bootp|both, or ip=DEVICE:dhcp: the value into ip.  0, or -1 with the
 * reason kept. */
int nbd_parse_ip(struct nbd_ipconf *ip, const char *value);
/* BOOTIF=01-aa-bb-cc-dd-ee-ff (PXE), the leading type optional. */
int nbd_parse_bootif(struct nbd_ipconf *ip, const char *value);
/* The /init words of a kernel command line (ip=, BOOTIF=, init=, ro, rw,
 * nbdboot.overlay=, nbdboot.panic=) into b.  0, or -1 naming the word. */
int nbd_parse_boot(struct nbd_boot *b, const char *text);
/* One received IPv4 packet (from its IP header): the DHCP reply to xid for
 * the hardware address mac, into l.  NULL when it is one, else why not. */
const char *nbd_dhcp_parse(const uint8_t *pkt, size_t len, uint32_t xid, const uint8_t mac[6],
			   struct nbd_lease *l);
/* A DHCPDISCOVER (offer NULL) or a DHCPREQUEST for offer, as an IPv4/UDP
 * broadcast packet in buf; its length (0 if size is too small). */
size_t nbd_dhcp_build(uint8_t *buf, size_t size, uint32_t xid, const uint8_t mac[6], uint16_t secs,
		      const struct nbd_lease *offer, const char *hostname);

/* Does the DER certificate list the address ip (4 or 16 bytes) among its
 * subjectAltName iPAddress entries?  Any malformed input is a "no". */
bool nbd_cert_has_ip(const uint8_t *der, size_t len, const uint8_t *ip, size_t iplen);

/* Copy at most NBD_SHOW_MAX bytes of untrusted text into out (size outsz),
 * replacing anything not printable ASCII by '?'. */
void nbd_sanitise(char *out, size_t outsz, const uint8_t *in, size_t len);

#endif

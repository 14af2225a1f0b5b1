# nbdboot: one static binary (musl + BearSSL) for the initramfs.
#
#   make                  ./nbdboot, static, stripped, with TLS
#   make NBDBOOT_TLS=0    the same program without TLS
#   make check            install test dependencies (as root), build, run all tests
#   make fuzz             run each libFuzzer target for FUZZ_SECONDS (default 60)
#   make deb              the Debian package, ../nbdboot_VERSION_ARCH.deb (debian/)
#   make initramfs        an initramfs with nbdboot as /init (KVER, MODULES, OUT, ...)
#
# BearSSL: Debian's libbearssl-dev ships a libbearssl.a compiled against glibc
# with _FORTIFY_SOURCE, so it needs __memcpy_chk and friends, which musl does
# not have.  Rather than shimming glibc internals into a musl binary, we build
# BearSSL itself with musl-gcc from Debian's own source package (the same
# 0.6 release, same archive, no patches in the Debian packaging), fetched
# with a private apt source list under build/ so the system's apt
# configuration is left alone.  The result is cached in build/bearssl.

NBDBOOT_TLS ?= 1
CC_MUSL     ?= musl-gcc
CC_SAN      ?= gcc
BUILD       := build
BEARSSL_DIR := $(BUILD)/bearssl
BEARSSL_LIB := $(BEARSSL_DIR)/src/build/libbearssl.a
BEARSSL_INC := $(BEARSSL_DIR)/src/inc
BEARSSL_SAN := $(BEARSSL_DIR)/src/build-gcc/libbearssl.a # for the glibc sanitizer builds

WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes
CFLAGS  ?= -Os
# Certificates are checked against the build time when the boot clock is older.
BUILD_TIME := $(or $(SOURCE_DATE_EPOCH),$(shell date +%s))
CFLAGS  += -std=c11 $(WARN) -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables \
           -DNBDBOOT_TLS=$(NBDBOOT_TLS) -DNBDBOOT_BUILD_TIME=$(BUILD_TIME)
LDFLAGS += -static -Wl,--gc-sections -s
SANFLAGS := -std=c11 $(WARN) -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all -DNBDBOOT_TLS=$(NBDBOOT_TLS) -DNBDBOOT_BUILD_TIME=$(BUILD_TIME)

# libFuzzer targets (tests/fuzz/): Debian 12's clang 14 and its fuzzer runtime,
# always with TLS, linked against the glibc BearSSL build.  clang warns about
# nbdboot's own vfmt() taking a format argument; gcc does not.
CC_FUZZ      ?= clang
FUZZ_TARGETS := cmdline uri argv handshake san dhcp ip
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 60
FUZZFLAGS := -std=c11 $(WARN) -Wno-format-nonliteral -g -O1 -fsanitize=fuzzer,address,undefined \
             -fno-sanitize-recover=all -fno-omit-frame-pointer -DNBDBOOT_TLS=1 \
             -DNBDBOOT_BUILD_TIME=$(BUILD_TIME)

ifeq ($(NBDBOOT_TLS),1)
TLS_DEPS   := $(BEARSSL_LIB)
TLS_CFLAGS := -I$(BEARSSL_INC)
TLS_LIBS   := $(BEARSSL_LIB)
SAN_DEPS   := $(BEARSSL_SAN)
SAN_LIBS   := $(BEARSSL_SAN)
endif

# Debian 12 packages the tests need; `make deps` installs the missing ones
# (mmdebstrap builds the systemd test root, tests/vm/sysroot.sh; dnsmasq
# hands out DHCP root-paths in the hook tests' network namespaces; iproute2
# makes those).
DEPS := musl-tools gcc libc6-dev make xz-utils ca-certificates nbdkit nbd-server qemu-utils \
        qemu-system-x86 busybox-static cpio e2fsprogs fdisk kmod openssl perl \
        clang libclang-rt-14-dev debhelper lintian mmdebstrap dnsmasq-base iproute2 zstd

.PHONY: all check deps demo bench bench-boot clean deb distclean fuzz fuzz-build initramfs install uninstall
all: nbdboot

nbdboot: nbdboot.c nbdboot.h $(TLS_DEPS) $(BUILD)/config.tls$(NBDBOOT_TLS)
	$(CC_MUSL) $(CFLAGS) $(TLS_CFLAGS) -o $@ nbdboot.c $(LDFLAGS) $(TLS_LIBS)

# Switching NBDBOOT_TLS rebuilds everything that includes nbdboot.c.
$(BUILD)/config.tls$(NBDBOOT_TLS):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/config.tls* && touch $@

$(BEARSSL_LIB):
	@command -v $(CC_MUSL) >/dev/null || { echo "make: $(CC_MUSL) missing: run 'make deps' as root"; exit 1; }
	rm -rf $(BEARSSL_DIR) && mkdir -p $(BEARSSL_DIR)/lists/partial
	printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		> $(BEARSSL_DIR)/src.sources
	cd $(BEARSSL_DIR) && APT="-q -o Dir::Etc::SourceList=$$PWD/src.sources -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$$PWD/lists -o APT::Sandbox::User=root" && \
		apt-get $$APT update >/dev/null && apt-get $$APT source --download-only bearssl && \
		mkdir src && tar -xJf bearssl_*.orig.tar.xz -C src --strip-components=1
	$(MAKE) -s -j2 -C $(BEARSSL_DIR)/src CONF=Unix CC=$(CC_MUSL) LD=$(CC_MUSL) LDDLL=$(CC_MUSL) \
		CFLAGS="-Os -fPIC -ffunction-sections -fdata-sections -W -Wall" build/libbearssl.a

$(BEARSSL_SAN): $(BEARSSL_LIB)
	$(MAKE) -s -j2 -C $(BEARSSL_DIR)/src CONF=Unix BUILD=build-gcc CC=$(CC_SAN) LD=$(CC_SAN) \
		LDDLL=$(CC_SAN) CFLAGS="-O2 -fPIC -W -Wall" build-gcc/libbearssl.a

# An initramfs whose only program is nbdboot (initramfs-hook/nbdboot-initramfs):
#   make initramfs [KVER=6.1.0-...] [MODULES="nbd ext4 e1000"] [BASEDIR=/]
#                  [TLSDIR=/etc/nbdboot] [COMPRESS=zstd|gzip|xz|none] [OUT=...]
KVER     ?= $(shell uname -r)
OUT      ?= $(BUILD)/initramfs-$(KVER).img
initramfs: nbdboot
	@mkdir -p $(dir $(OUT))
	initramfs-hook/nbdboot-initramfs -k $(KVER) -n ./nbdboot $(if $(MODULES),-m "$(MODULES)") \
		$(if $(BASEDIR),-b $(BASEDIR)) $(if $(TLSDIR),-t $(TLSDIR)) $(if $(COMPRESS),-z $(COMPRESS)) $(OUT)

# Install: the binary and man page under PREFIX; the dracut module and the
# initramfs-tools hook and boot script where those generators look for them,
# whatever PREFIX is (dracut reads only its own modules.d), and the functions
# both source at build time where they look for them (HOOKLIBDIR).
PREFIX       ?= /usr/local
SBINDIR      ?= $(PREFIX)/sbin
MANDIR       ?= $(PREFIX)/share/man
DRACUTMODDIR ?= /usr/lib/dracut/modules.d/95nbdboot
ITOOLSDIR    ?= /usr/share/initramfs-tools
HOOKLIBDIR   ?= /usr/lib/nbdboot
HOOKFILES    := $(wildcard initramfs-hook/dracut/*.sh initramfs-hook/dracut/*.rules)
ITOOLSFILES  := $(patsubst initramfs-hook/initramfs-tools/%,%,$(wildcard initramfs-hook/initramfs-tools/hooks/* initramfs-hook/initramfs-tools/scripts/*/*))

install: nbdboot
	install -D -m 755 nbdboot $(DESTDIR)$(SBINDIR)/nbdboot
	install -D -m 644 nbdboot.8 $(DESTDIR)$(MANDIR)/man8/nbdboot.8
	install -d $(DESTDIR)$(DRACUTMODDIR)
	$(if $(HOOKFILES),install -m 755 $(HOOKFILES) $(DESTDIR)$(DRACUTMODDIR)/)
	$(foreach f,$(ITOOLSFILES),install -D -m 755 initramfs-hook/initramfs-tools/$(f) $(DESTDIR)$(ITOOLSDIR)/$(f) &&) true
	install -D -m 644 initramfs-hook/hook-functions.sh $(DESTDIR)$(HOOKLIBDIR)/hook-functions.sh
	install -D -m 755 initramfs-hook/nbdboot-initramfs $(DESTDIR)$(HOOKLIBDIR)/nbdboot-initramfs

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/nbdboot $(DESTDIR)$(MANDIR)/man8/nbdboot.8
	rm -rf $(DESTDIR)$(DRACUTMODDIR)
	$(foreach f,$(ITOOLSFILES),rm -f $(DESTDIR)$(ITOOLSDIR)/$(f) &&) true
	rm -rf $(DESTDIR)$(HOOKLIBDIR)

# Tests: unit tests include nbdboot.c itself, once with musl, once with ASan+UBSan.
$(BUILD)/unit: tests/unit.c nbdboot.c nbdboot.h $(TLS_DEPS) $(BUILD)/config.tls$(NBDBOOT_TLS)
	@mkdir -p $(BUILD)
	$(CC_MUSL) $(CFLAGS) $(TLS_CFLAGS) -I. -static -o $@ tests/unit.c $(TLS_LIBS)

$(BUILD)/unit-asan: tests/unit.c nbdboot.c nbdboot.h $(SAN_DEPS) $(BUILD)/config.tls$(NBDBOOT_TLS)
	@mkdir -p $(BUILD)
	$(CC_SAN) $(SANFLAGS) $(TLS_CFLAGS) -I. -o $@ tests/unit.c $(SAN_LIBS)

$(BUILD)/nbdboot-asan: nbdboot.c nbdboot.h $(SAN_DEPS) $(BUILD)/config.tls$(NBDBOOT_TLS)
	@mkdir -p $(BUILD)
	$(CC_SAN) $(SANFLAGS) $(TLS_CFLAGS) -o $@ nbdboot.c $(SAN_LIBS)

$(FUZZ_BINS): $(BUILD)/%: tests/%.c tests/fuzz/fuzz.h nbdboot.c nbdboot.h $(BEARSSL_SAN)
	@mkdir -p $(BUILD)/fuzz
	$(CC_FUZZ) $(FUZZFLAGS) -I$(BEARSSL_INC) -o $@ $< $(BEARSSL_SAN)

fuzz-build: $(FUZZ_BINS)

deps:
	@if [ "$$(id -u)" = 0 ] && ! apt-cache show linux-image-amd64 nbd-client >/dev/null 2>&1; then \
		echo "make: apt-get update (the VM tests download Debian packages)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null; fi
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	line="apt-get install -y --no-install-recommends $$(echo $$missing)"; \
	if [ "$$(id -u)" != 0 ]; then echo "make: missing packages; as root run: apt-get update && $$line"; exit 1; fi; \
	echo "make: installing:" $$missing; \
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$line >/dev/null

check: deps
	$(MAKE) nbdboot $(BUILD)/unit $(BUILD)/unit-asan $(BUILD)/nbdboot-asan fuzz-build
	tests/run-all.sh

# Each target for FUZZ_SECONDS from its seed corpus (copied: the repo's
# corpus is never written); findings are kept under build/fuzz/artifacts.
fuzz: deps
	$(MAKE) fuzz-build
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# The README's first command: boot a VM whose root is an NBD export.
demo: deps
	$(MAKE) nbdboot
	tests/vm/demo.sh

# Benchmarks print ratios against Debian's nbd-client measured in the same run.
bench: deps
	$(MAKE) nbdboot
	bench/attach
	bench/tls
	bench/throughput
	bench/storm

# Boot times of a real systemd root through dracut and initramfs-tools, with
# nbd-client and with nbdboot (about 30 minutes on 2 cores; needs root).
bench-boot: deps
	$(MAKE) nbdboot
	bench/boot

# The Debian package, built as Debian builds it (debian/rules runs this
# Makefile; BearSSL's source is fetched into build/bearssl as above, once).
# dpkg-buildpackage puts the .deb, .buildinfo and .changes next to the tree;
# the tree is cleaned afterwards.  As root, missing build dependencies
# (debian/control) are installed first; otherwise dpkg-buildpackage names them.
deb:
	@if [ "$$(id -u)" = 0 ] && ! dpkg-checkbuilddeps >/dev/null 2>&1; then \
		echo "make: installing the build dependencies (apt-get build-dep ./)"; \
		DEBIAN_FRONTEND=noninteractive apt-get build-dep -q -y ./ >/dev/null; fi
	dpkg-buildpackage -b -us -uc
	debian/rules clean >/dev/null
	@echo "make: built $$(cd .. && pwd)/nbdboot_$$(dpkg-parsechangelog -SVersion)_$$(dpkg --print-architecture).deb"

clean:
	rm -f nbdboot $(BUILD)/unit $(BUILD)/unit-asan $(BUILD)/nbdboot-asan $(BUILD)/results.txt
	rm -rf $(BUILD)/fuzz

distclean: clean
	rm -rf $(BUILD)

#!/bin/bash
# pki.sh DIR - make the test PKI for tests/tls.sh (openssl only, EC P-256
# keys, one RSA-2048 client key).  Idempotent: a complete DIR whose
# certificates are still valid for a day is left alone; otherwise everything
# is made anew.  Takes well under a second.
#
# DIR/
#   ca.pem ca-key.pem             test CA ("nbdboot test CA")
#   other-ca.pem other-ca-key.pem unrelated CA, for "unknown CA" refusals
#   bundle.pem                    other-ca.pem + ca.pem (several CAs in one file)
#   inter.pem inter-key.pem       intermediate CA under ca.pem
#   server.pem server-key.pem     DNS:localhost DNS:nbd.test IP:127.0.0.1 IP:::1
#   chain.pem chain-key.pem       DNS:localhost, issued by inter.pem;
#                                 chain-full.pem = chain.pem + inter.pem
#   wrong.pem wrong-key.pem       DNS:wrong.test only
#   expired.pem expired-key.pem   DNS:localhost IP:127.0.0.1, ended yesterday
#   future.pem future-key.pem     DNS:localhost IP:127.0.0.1, starts in 30 days
#   client.pem client-key.pem     client certificate, EC key (PKCS#8)
#   client-rsa.pem client-rsa-key.pem  client certificate, RSA-2048 key (PKCS#8)
#   client-key-sec1.pem           client-key.pem as "EC PARAMETERS" +
#                                 "EC PRIVATE KEY" (what `openssl ecparam
#                                 -genkey` writes)
#   client-rsa-key-pkcs1.pem      client-rsa-key.pem as "RSA PRIVATE KEY"
#   other-client.pem other-client-key.pem  client certificate from other-ca
#   nbdkit/ nbdkit-wrong/ nbdkit-expired/ nbdkit-future/ nbdkit-chain/
#                                 nbdkit --tls-certificates=DIR form, also
#                                 what qemu-nbd's tls-creds-x509 dir= reads:
#                                 ca-cert.pem server-cert.pem server-key.pem
#   nbd-server.conf               [generic] lines for nbd-server (certfile,
#                                 keyfile, cacertfile, force_tls)
set -eu

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
STAMP=$DIR/.pki-complete

command -v openssl >/dev/null || { echo "pki.sh: openssl is missing (apt-get install openssl)" >&2; exit 2; }

if [ -f "$STAMP" ] && openssl x509 -checkend 86400 -noout -in "$DIR/server.pem" >/dev/null 2>&1; then
	exit 0
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
STAMP=$DIR/.pki-complete
rm -f "$STAMP"
W=$(mktemp -d "$DIR/.work.XXXXXX")
trap 'rm -rf "$W"' EXIT
umask 077

ossl() {
	local out
	out=$(openssl "$@" 2>&1) || { echo "pki.sh: openssl $1 failed:" >&2; echo "$out" >&2; exit 1; }
}

# 'openssl ca' gives start and end dates in both directions (x509 -days
# cannot go into the past).  Minimal configuration, state in $W.
cat >"$W/ca.cnf" <<EOF
[ca]
default_ca = tca
[tca]
database = $W/index.txt
new_certs_dir = $W
rand_serial = yes
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
organizationName = optional
[req]
distinguished_name = dn
prompt = no
[dn]
EOF
: >"$W/index.txt"

d() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
START=$(d '-1 day')
END=$(d '+825 days')

eckey() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$1"; }
rsakey() { ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/$1"; }

# ext NAME LINES...: an extension file $W/NAME.ext, section [x].
ext() {
	local f=$W/$1.ext
	shift
	{ echo "[x]"; printf '%s\n' "$@"; } >"$f"
}

CA_EXT=("basicConstraints = critical,CA:TRUE" "keyUsage = critical,keyCertSign,cRLSign"
	"subjectKeyIdentifier = hash")
# keyEncipherment too: qemu refuses server certificates without it.
SRV_USAGE=("basicConstraints = critical,CA:FALSE" "keyUsage = critical,digitalSignature,keyEncipherment"
	"extendedKeyUsage = serverAuth" "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid")
CLI_USAGE=("basicConstraints = critical,CA:FALSE" "keyUsage = critical,digitalSignature,keyEncipherment"
	"extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid")

# cert NAME CN ISSUER(self|name) START END EXT: $W/NAME.pem from $W/NAME-key.pem.
cert() {
	local name=$1 cn=$2 issuer=$3 start=$4 end=$5 extname=$6
	ossl req -new -config "$W/ca.cnf" -key "$W/$name-key.pem" -subj "/O=nbdboot tests/CN=$cn" \
		-out "$W/$name.csr"
	if [ "$issuer" = self ]; then
		ossl ca -config "$W/ca.cnf" -batch -notext -selfsign -keyfile "$W/$name-key.pem" \
			-in "$W/$name.csr" -out "$W/$name.pem" -startdate "$start" -enddate "$end" \
			-extfile "$W/$extname.ext" -extensions x
	else
		ossl ca -config "$W/ca.cnf" -batch -notext -cert "$W/$issuer.pem" \
			-keyfile "$W/$issuer-key.pem" -in "$W/$name.csr" -out "$W/$name.pem" \
			-startdate "$start" -enddate "$end" -extfile "$W/$extname.ext" -extensions x
	fi
}

ext ca "${CA_EXT[@]}"
ext inter "basicConstraints = critical,CA:TRUE,pathlen:0" "keyUsage = critical,keyCertSign,cRLSign" \
	"subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid"
ext server "${SRV_USAGE[@]}" "subjectAltName = DNS:localhost,DNS:nbd.test,IP:127.0.0.1,IP:::1"
ext localhost "${SRV_USAGE[@]}" "subjectAltName = DNS:localhost,IP:127.0.0.1"
ext wrong "${SRV_USAGE[@]}" "subjectAltName = DNS:wrong.test"
ext client "${CLI_USAGE[@]}"

for k in ca other-ca inter server chain wrong expired future client other-client; do eckey "$k-key.pem"; done
rsakey client-rsa-key.pem

cert ca "nbdboot test CA" self "$START" "$(d '+3650 days')" ca
cert other-ca "unrelated test CA" self "$START" "$(d '+3650 days')" ca
cert inter "nbdboot test intermediate CA" ca "$START" "$(d '+3000 days')" inter
cert server localhost ca "$START" "$END" server
cert chain localhost inter "$START" "$END" localhost
cert wrong wrong.test ca "$START" "$END" wrong
cert expired localhost ca "$(d '-60 days')" "$(d '-1 day')" localhost
cert future localhost ca "$(d '+30 days')" "$(d '+400 days')" localhost
cert client "nbdboot test client" ca "$START" "$END" client
cert client-rsa "nbdboot test RSA client" ca "$START" "$END" client
cert other-client "client of the other CA" other-ca "$START" "$END" client

cat "$W/other-ca.pem" "$W/ca.pem" >"$W/bundle.pem"
cat "$W/chain.pem" "$W/inter.pem" >"$W/chain-full.pem"
{
	openssl ecparam -name prime256v1
	openssl ec -in "$W/client-key.pem" 2>/dev/null
} >"$W/client-key-sec1.pem"
openssl rsa -traditional -in "$W/client-rsa-key.pem" -out "$W/client-rsa-key-pkcs1.pem" 2>/dev/null

# Sanity: every leaf verifies against its CA (expired/future are meant not to).
ossl verify -CAfile "$W/ca.pem" "$W/server.pem" "$W/wrong.pem" "$W/client.pem" "$W/client-rsa.pem"
ossl verify -CAfile "$W/ca.pem" -untrusted "$W/inter.pem" "$W/chain.pem"
ossl verify -CAfile "$W/other-ca.pem" "$W/other-client.pem"

FILES=(ca ca-key other-ca other-ca-key bundle inter inter-key server server-key chain chain-key
	chain-full wrong wrong-key expired expired-key future future-key client client-key
	client-key-sec1 client-rsa client-rsa-key client-rsa-key-pkcs1 other-client other-client-key)
for f in "${FILES[@]}"; do mv -f "$W/$f.pem" "$DIR/$f.pem"; done

# nbdkit --tls-certificates=DIR and qemu-nbd tls-creds-x509 dir=DIR layout.
srvdir() {
	local d=$DIR/$1
	rm -rf "$d"
	mkdir -p "$d"
	cp "$DIR/ca.pem" "$d/ca-cert.pem"
	cp "$DIR/$2.pem" "$d/server-cert.pem"
	cp "$DIR/$3.pem" "$d/server-key.pem"
}
srvdir nbdkit server server-key
srvdir nbdkit-wrong wrong wrong-key
srvdir nbdkit-expired expired expired-key
srvdir nbdkit-future future future-key
srvdir nbdkit-chain chain-full chain-key

# nbd-server: these go into its [generic] section.
cat >"$DIR/nbd-server.conf" <<EOF
certfile = $DIR/server.pem
keyfile = $DIR/server-key.pem
cacertfile = $DIR/ca.pem
force_tls = true
EOF

# Servers may run as another user; nothing here is secret.
chmod 755 "$DIR" "$DIR"/nbdkit*
chmod 644 "$DIR"/*.pem "$DIR"/nbdkit*/*.pem "$DIR/nbd-server.conf"
touch "$STAMP"

/*
 * san - libFuzzer target for nbd_cert_has_ip, the walker that looks for an
 * address among a certificate's subjectAltName iPAddress entries.
 *
 * Input: one byte choosing the address length (even: 4, odd: 16), the
 * address, then the DER certificate.
 *
 * Property: a "yes" means the certificate holds the address as an
 * iPAddress element: the address bytes occur in the DER, right after the
 * tag 0x87 and a length (short or long form) equal to the address length.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

/* Is der[at, at + iplen) the value of a [7] element of length iplen? */
static bool ip_element_at(const uint8_t *der, size_t at, size_t iplen)
{
	static const uint8_t heads[][5] = {
		{ 2, 0x87, 0 }, { 3, 0x87, 0x81 }, { 4, 0x87, 0x82, 0 }, { 5, 0x87, 0x83, 0, 0 },
	};
	for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
		size_t h = heads[i][0];
		if (at < h || der[at - 1] != iplen || memcmp(der + at - h, heads[i] + 1, h - 1))
			continue;
		return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t iplen = data[0] & 1 ? 16 : 4;
	if (size < 1 + iplen)
		return 0;
	const uint8_t *ip = data + 1, *der = data + 1 + iplen;
	size_t len = size - 1 - iplen;
	if (!nbd_cert_has_ip(der, len, ip, iplen))
		return 0;
	bool found = false;
	for (size_t at = 0; at + iplen <= len && !found; at++)
		found = !memcmp(der + at, ip, iplen) && ip_element_at(der, at, iplen);
	PROPERTY(found, "nbd_cert_has_ip says yes, but the %zu-byte address is not an iPAddress "
			"element of the %zu-byte input", iplen, len);
	return 0;
}

{{/*
A fresh Ed25519 key in OpenSSH's own private key format, the only one the gateway's
host key loader reads (sprig's genPrivateKey gives PKCS#8 PEM). From the PKCS#8 DER,
the seed is bytes 16..48; sprig cannot derive the public key from it, but a self-signed
certificate made with the key carries it after the Ed25519 SubjectPublicKeyInfo prefix.
Then the openssh-key-v1 structure (PROTOCOL.key) is written out: no cipher, no KDF, one
key, a private section of check ints, key type, public key, seed||public key, comment,
padded to 8 bytes. Every length is fixed, so it is spelled out in bytes. Output: YAML
with `private` (the key file) and `public` (its .pub line).
*/}}
{{- define "ssh-gateway.openSSHEd25519Key" -}}
{{- $pem := genPrivateKey "ed25519" }}
{{- $der := $pem | replace "-----BEGIN PRIVATE KEY-----" "" | replace "-----END PRIVATE KEY-----" "" | nospace | b64dec }}
{{- $seed := substr 16 48 $der }}
{{- $cert := genSelfSignedCertWithKey "ssh-gateway host key" nil nil 1 $pem }}
{{- $certDer := $cert.Cert | replace "-----BEGIN CERTIFICATE-----" "" | replace "-----END CERTIFICATE-----" "" | nospace | b64dec }}
{{- $after := splitn "\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00" 2 $certDer }}
{{- $pub := substr 0 32 $after._1 }}
{{- if or (ne (len $seed) 32) (ne (len $pub) 32) }}
{{- fail "ssh-gateway: could not generate an Ed25519 host key with this Helm; create the Secret with ssh-keygen and set hostKeys.existingSecret" }}
{{- end }}
{{- $comment := "ssh-gateway host key" }}
{{- $blob := printf "\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20%s" $pub }}
{{- $check := substr 0 4 (randBytes 4 | b64dec) }}
{{- $private := printf "%s%s%s\x00\x00\x00\x40%s%s\x00\x00\x00\x14%s\x01" $check $check $blob $seed $pub $comment }}
{{- $body := printf "openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x33%s\x00\x00\x00\x98%s" $blob $private }}
private: |
  -----BEGIN OPENSSH PRIVATE KEY-----
  {{- regexReplaceAll "(.{70})" ($body | b64enc) "${1}\n" | nindent 2 }}
  -----END OPENSSH PRIVATE KEY-----
public: {{ printf "ssh-ed25519 %s %s" ($blob | b64enc) $comment | quote }}
{{- end }}

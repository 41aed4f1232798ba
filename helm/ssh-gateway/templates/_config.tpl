{{/*
gateway.toml from .Values.config, with the fields the chart owns (listeners, paths,
PROXY protocol, fronts, the user CA) set from the values the pod spec also reads, so
the two cannot disagree. The database URL is not here: it comes from the Secret as
SSH_GATEWAY__DATABASE__URL.
*/}}
{{- define "ssh-gateway.configTree" -}}
{{- $c := deepCopy (.Values.config | default dict) }}
{{- $ssh := $c.ssh | default dict }}
{{- $_ := set $ssh "listen" (printf "0.0.0.0:%v" .Values.ports.ssh) }}
{{- $_ = set $ssh "host_key_dir" (include "ssh-gateway.hostKeyDir" .) }}
{{- $_ = set $ssh "proxy_protocol" .Values.proxyProtocol.enabled }}
{{- if .Values.proxyProtocol.from }}
{{- $_ = set $ssh "proxy_protocol_from" .Values.proxyProtocol.from }}
{{- end }}
{{- $_ = set $c "ssh" $ssh }}
{{- $api := $c.api | default dict }}
{{- $_ = set $api "listen" (printf "0.0.0.0:%v" .Values.ports.api) }}
{{- $_ = set $c "api" $api }}
{{- /* The hook Job migrates once per install or upgrade and replicas only check;
without the hook, replicas migrate at start. */}}
{{- $db := $c.database | default dict }}
{{- $_ = set $db "migrate_on_start" (not .Values.migrations.enabled) }}
{{- $_ = set $c "database" $db }}
{{- $fronts := dict }}
{{- with .Values.fronts.tls }}{{ if .enabled }}
{{- $tls := dict "listen" (printf "0.0.0.0:%v" $.Values.ports.tls) "cert_file" (printf "%s/tls.crt" (include "ssh-gateway.tlsDir" $)) "key_file" (printf "%s/tls.key" (include "ssh-gateway.tlsDir" $)) }}
{{- if .publicAddress }}{{ $_ = set $tls "public_address" .publicAddress }}{{ end }}
{{- $_ = set $fronts "tls" $tls }}
{{- end }}{{ end }}
{{- with .Values.fronts.connect }}{{ if .enabled }}
{{- $connect := dict "listen" (printf "0.0.0.0:%v" $.Values.ports.connect) }}
{{- if .publicAddress }}{{ $_ = set $connect "public_address" .publicAddress }}{{ end }}
{{- $_ = set $fronts "connect" $connect }}
{{- end }}{{ end }}
{{- if $fronts }}{{ $_ = set $c "fronts" $fronts }}{{ end }}
{{- if .Values.userCA.existingSecret }}
{{- $certs := $c.certificates | default dict }}
{{- $_ = set $certs "ca_key_file" (printf "%s/user_ca_ed25519_key" (include "ssh-gateway.userCADir" .)) }}
{{- $_ = set $certs "max_ttl_secs" .Values.userCA.maxTtlSecs }}
{{- $_ = set $c "certificates" $certs }}
{{- end }}
{{- toJson $c }}
{{- end }}

{{- define "ssh-gateway.gatewayToml" -}}
# Rendered by the ssh-gateway Helm chart from .Values.config; edit the values, not this.
# database.url comes from the environment (SSH_GATEWAY__DATABASE__URL).
{{ include "ssh-gateway.toml.table" (dict "prefix" "" "table" (include "ssh-gateway.configTree" . | fromJson)) }}
{{- with .Values.extraConfig }}
# extraConfig
{{ . }}
{{- end }}
{{- end }}

{{/* One TOML table: its plain keys first, then its sub-tables, each sorted. */}}
{{- define "ssh-gateway.toml.table" -}}
{{- $prefix := .prefix }}
{{- $table := .table }}
{{- if $prefix }}
[{{ $prefix }}]
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "ssh-gateway.toml.key" $k }} = {{ include "ssh-gateway.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if kindIs "map" $v }}
{{- $key := include "ssh-gateway.toml.key" $k }}
{{- $path := ternary $key (printf "%s.%s" $prefix $key) (not $prefix) }}
{{ include "ssh-gateway.toml.table" (dict "prefix" $path "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Bare keys where TOML allows them, quoted otherwise. */}}
{{- define "ssh-gateway.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* JSON strings, numbers, booleans and arrays of them are TOML too (JSON's \uXXXX
escapes included). */}}
{{- define "ssh-gateway.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "ssh-gateway.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" . }}{{ fail "ssh-gateway: tables inside arrays are not supported in config; use extraConfig" }}
{{- else }}{{ toJson . }}
{{- end }}
{{- end }}

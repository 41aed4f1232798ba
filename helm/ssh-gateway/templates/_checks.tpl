{{/* What the schema cannot say: checks across values, each failing with the fix. */}}
{{- define "ssh-gateway.checks" -}}
{{- $drain := int (((.Values.config).ssh).drain_timeout_secs | default 25) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.ssh.drain_timeout_secs (%d): otherwise the kubelet kills sessions the gateway is still draining" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- if and (or .Values.fronts.tls.enabled .Values.fronts.connect.enabled) (not (((.Values.config).routing).domain)) }}
{{- fail "fronts.tls and fronts.connect need config.routing.domain: the host names they receive route under it" }}
{{- end }}
{{- if and .Values.fronts.tls.enabled (not .Values.fronts.tls.secretName) }}
{{- fail "fronts.tls.enabled needs fronts.tls.secretName: a kubernetes.io/tls Secret with the certificate for *.<domain>" }}
{{- end }}
{{- if and .Values.proxyProtocol.from (not .Values.proxyProtocol.enabled) }}
{{- fail "proxyProtocol.from is set but proxyProtocol.enabled is false: turn it on, or remove the list" }}
{{- end }}
{{- if and (eq .Values.podAntiAffinity "hard") .Values.affinity }}
{{- fail "podAntiAffinity: hard and affinity are both set; set podAntiAffinity: none to use your own affinity" }}
{{- end }}
{{- end }}

{{/* Fields of config the chart sets itself, because the pod spec depends on them. */}}
{{- define "ssh-gateway.ownedFields" -}}
{{- $owned := dict "ssh" (list "listen" "host_key_dir" "proxy_protocol" "proxy_protocol_from") "api" (list "listen") "database" (list "url" "migrate_on_start") }}
{{- range $section, $fields := $owned }}
{{- range $field := $fields }}
{{- if hasKey (index ($.Values.config | default dict) $section | default dict) $field }}
{{- fail (printf "config.%s.%s is set by the chart (see values.yaml: ports, hostKeys, proxyProtocol, database.existingSecret, the migrate hook); remove it from config" $section $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- if hasKey (.Values.config | default dict) "fronts" }}
{{- fail "config.fronts is set by the chart; use the fronts values (fronts.tls, fronts.connect)" }}
{{- end }}
{{- if and .Values.userCA.existingSecret (hasKey ((.Values.config).certificates | default dict) "ca_key_file") }}
{{- fail "config.certificates.ca_key_file is set by the chart when userCA.existingSecret is; remove it from config" }}
{{- end }}
{{- end }}

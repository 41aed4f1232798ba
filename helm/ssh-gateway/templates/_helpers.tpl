{{/* Names and labels. */}}
{{- define "ssh-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ssh-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ssh-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssh-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ssh-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ssh-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ssh-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ssh-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ssh-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ssh-gateway.hostKeySecretName" -}}
{{- default (printf "%s-host-keys" (include "ssh-gateway.fullname" .)) .Values.hostKeys.existingSecret }}
{{- end }}

{{/* Paths inside the pod. The host keys and the user CA are copied from their Secrets
into memory-backed emptyDirs by the init container: see deployment.yaml for why. */}}
{{- define "ssh-gateway.hostKeyDir" -}}/var/lib/ssh-gateway/host-keys{{- end }}
{{- define "ssh-gateway.userCADir" -}}/var/lib/ssh-gateway/user-ca{{- end }}
{{- define "ssh-gateway.tlsDir" -}}/etc/ssh-gateway/tls{{- end }}

{{/* Both containers: no root, no privilege, nothing writable but the emptyDirs. */}}
{{- define "ssh-gateway.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{- define "ssh-gateway.rbacRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/exec, pods/portforward]
  verbs: [create, get]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [statefulsets/scale]
  verbs: [patch]
{{- end }}

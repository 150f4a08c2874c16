{{/* Chart name, truncated to fit DNS labels. */}}
{{- define "pageserver-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart name, unless the release name already contains it. */}}
{{- define "pageserver-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pageserver-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pageserver-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pageserver-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pageserver-operator.labels" -}}
helm.sh/chart: {{ include "pageserver-operator.chart" . }}
{{ include "pageserver-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "pageserver-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pageserver-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pageserver-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The remote storage URL (PAGESERVER_OPERATOR_REMOTE): remote.url as given, or
s3://BUCKET[/PREFIX]?endpoint=...&region=... built from remote.bucket and friends.
*/}}
{{- define "pageserver-operator.remoteURL" -}}
{{- $r := .Values.remote }}
{{- if and $r.url $r.bucket }}
{{- fail "remote: set either remote.url or remote.bucket (with prefix, endpoint, region), not both" }}
{{- end }}
{{- if $r.url }}
{{- if or $r.prefix $r.endpoint $r.region }}
{{- fail "remote: remote.prefix, remote.endpoint and remote.region go with remote.bucket; with remote.url write them into the URL (s3://BUCKET/PREFIX?endpoint=...&region=...)" }}
{{- end }}
{{- $r.url }}
{{- else if $r.bucket }}
{{- $params := list }}
{{- if $r.endpoint }}{{ $params = append $params (printf "endpoint=%s" $r.endpoint) }}{{ end }}
{{- if $r.region }}{{ $params = append $params (printf "region=%s" $r.region) }}{{ end }}
{{- printf "s3://%s" $r.bucket }}{{ if $r.prefix }}/{{ $r.prefix }}{{ end }}{{ if $params }}?{{ join "&" $params }}{{ end }}
{{- else }}
{{- fail "remote: remote storage is required: set remote.url (file:///absolute/path or s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=REGION) or remote.bucket (with remote.prefix, remote.endpoint, remote.region)" }}
{{- end }}
{{- end }}

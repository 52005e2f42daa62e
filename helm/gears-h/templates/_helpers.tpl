{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "gears-h.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already holds it. */}}
{{- define "gears-h.fullname" -}}
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

{{- define "gears-h.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gears-h.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gears-h.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gears-h.labels" -}}
helm.sh/chart: {{ include "gears-h.chart" . }}
{{ include "gears-h.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gears-h.testLabels" -}}
helm.sh/chart: {{ include "gears-h.chart" . }}
app.kubernetes.io/name: {{ include "gears-h.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gears-h.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gears-h.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gears-h.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* GEARS_H_MODEL: "default"/a path inside the image, or the bundle on the mounted volume. */}}
{{- define "gears-h.modelPath" -}}
{{- $m := .Values.model }}
{{- if eq $m.source "image" }}
{{- $m.name }}
{{- else if $m.path }}
{{- printf "%s/%s" (trimSuffix "/" $m.mountPath) (trimPrefix "/" $m.path) }}
{{- else }}
{{- $m.mountPath }}
{{- end }}
{{- end }}

{{- define "gears-h.apiKeySecretName" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else }}
{{- printf "%s-api-key" (include "gears-h.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "gears-h.apiKeyEnabled" -}}
{{- if or .Values.apiKey.existingSecret .Values.apiKey.create }}true{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then GEARS_H_DRAIN_SECONDS for in-flight
requests, then 15 s for the HTTP and gRPC servers to close (the service allows 5 s + 5 s + 2 s).
An explicit value must leave at least preStop + drain + 10 s.
*/}}
{{- define "gears-h.terminationGracePeriodSeconds" -}}
{{- $floor := add (int .Values.shutdown.preStopSleepSeconds) (int (ceil .Values.server.drainSeconds)) 10 }}
{{- if kindIs "invalid" .Values.shutdown.terminationGracePeriodSeconds }}
{{- add $floor 5 }}
{{- else if lt (int .Values.shutdown.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds + server.drainSeconds + 10 = %d" .Values.shutdown.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- int .Values.shutdown.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

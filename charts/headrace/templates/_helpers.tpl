{{/* The chart name, or nameOverride. */}}
{{- define "headrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-scoped name every object starts with, cut to 63 characters (the DNS label limit).
When the release name already contains the chart name it is not repeated.
*/}}
{{- define "headrace.fullname" -}}
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

{{/* A component's object name: fullname-component, still within 63 characters. */}}
{{- define "headrace.componentName" -}}
{{- printf "%s-%s" (include "headrace.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "headrace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. Call with (dict "root" $ "component" "operator"). */}}
{{- define "headrace.labels" -}}
helm.sh/chart: {{ include "headrace.chart" .root }}
{{ include "headrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: headrace
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select a component's pods; they never change across upgrades. */}}
{{- define "headrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "headrace.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The ServiceAccount a component runs as. Call with (dict "root" $ "component" "api"). */}}
{{- define "headrace.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (include "headrace.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* image reference: repository:tag or repository@digest. Call with (dict "root" $ "image" .Values.image). */}}
{{- define "headrace.image" -}}
{{- $repository := default .root.Values.image.repository .image.repository }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion (default .root.Values.image.tag .image.tag)) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding DATABASE_URL: the bundled dev Postgres's, or database.existingSecret. */}}
{{- define "headrace.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- include "headrace.componentName" (dict "root" . "component" "database") }}
{{- else }}
{{- required "database.existingSecret must name a Secret with key DATABASE_URL (or set postgresql.enabled=true for a dev install)" .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{/* The env var every database client reads, from the database Secret. */}}
{{- define "headrace.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "headrace.databaseSecretName" . }}
      key: DATABASE_URL
{{- end }}

{{/* The writable scratch space every container gets, because its root filesystem is read-only. */}}
{{- define "headrace.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "headrace.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* A NetworkPolicy ingress rule admitting Prometheus to a pod's `metrics` port. */}}
{{- define "headrace.metricsIngress" -}}
# Metrics: from Prometheus' namespace only (metrics.prometheusNamespace; every namespace when empty).
- ports:
    - port: metrics
      protocol: TCP
  {{- with .Values.metrics.prometheusNamespace }}
  from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . }}
  {{- end }}
{{- end }}

{{/*
Fail the install at once, with the command to type, when the database Secret is missing: otherwise the
migration hook waits in CreateContainerConfigError until helm times out. Only checked where helm talks
to a cluster that has the release namespace (`lookup` answers nothing in `helm template`).
*/}}
{{- define "headrace.requireDatabaseSecret" -}}
{{- if and (not .Values.postgresql.enabled) (lookup "v1" "Namespace" "" .Release.Namespace) }}
{{- $name := include "headrace.databaseSecretName" . }}
{{- if not (lookup "v1" "Secret" .Release.Namespace $name) }}
{{- fail (printf "Secret %q (key DATABASE_URL) is missing in namespace %q; create it first:\n  kubectl -n %s create secret generic %s --from-literal=DATABASE_URL='postgresql://USER:PASSWORD@HOST:5432/DB'\n(or install with --set postgresql.enabled=true for a dev-only Postgres)" $name .Release.Namespace .Release.Namespace $name) }}
{{- end }}
{{- end }}
{{- end }}

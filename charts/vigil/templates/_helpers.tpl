{{/* Chart name. */}}
{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the controller's objects (Deployment, Service, ConfigMap). */}}
{{- define "vigil.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-controller" (include "vigil.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "vigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: vigil
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "vigil.selectorLabels" . }}
{{- end }}

{{/* Labels that select the controller pods. */}}
{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The controller's Service DNS name. */}}
{{- define "vigil.serviceHost" -}}
{{ include "vigil.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{/* The controller's SPIFFE ID. */}}
{{- define "vigil.identity" -}}
spiffe://{{ .Values.trustDomain }}/ns/{{ .Release.Namespace }}/sa/{{ .Values.serviceAccount.name }}
{{- end }}

{{/* Audience of the projected service-account token proxies prove themselves with: the
injector requests it and the controller's TokenReview requires it, so both come from here. */}}
{{- define "vigil.tokenAudience" -}}
vigil-ca
{{- end }}

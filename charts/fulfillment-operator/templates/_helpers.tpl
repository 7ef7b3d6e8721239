{{/* Chart name. */}}
{{- define "fo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, unless overridden. */}}
{{- define "fo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "fo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "fo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fulfillment-operator
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "fo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* ServiceAccount name. */}}
{{- define "fo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules a plan's namespace needs: read plans, write their status, scale targets, events. */}}
{{- define "fo.planRules" -}}
# Watch FulfillmentPlans (the controller's list/watch feeds its cache; it never gets one by name).
- apiGroups: [fulfillment.dev]
  resources: [fulfillmentplans]
  verbs: [list, watch]
# Write each plan's status (server-side apply is a patch).
- apiGroups: [fulfillment.dev]
  resources: [fulfillmentplans/status]
  verbs: [patch]
{{- range .Values.rbac.scaleTargets }}
# Read and set replicas of {{ .apiGroup }} targets through /scale only; the objects themselves are never read or written.
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ range $i, $r := .resources }}{{ if $i }}, {{ end }}{{ $r }}/scale{{ end }}]
  verbs: [get, patch]
{{- if eq .apiGroup "apps" }}
# Failover: read status.readyReplicas of raised survivors (Deployments, StatefulSets) before moving traffic to them.
- apiGroups: [apps]
  resources: [{{ range $i, $r := .resources }}{{ if $i }}, {{ end }}{{ $r }}/status{{ end }}]
  verbs: [get]
{{- end }}
{{- if $.Values.rbac.readTargetConditions }}
# Read the targets themselves, only to quote their conditions when a broker change is not carried out.
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ join ", " .resources }}]
  verbs: [get]
{{- end }}
{{- end }}
{{- if .Values.rbac.routers.gatewayAPI }}
# Failover: read and set the backendRef weights of Gateway API HTTPRoutes.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- end }}
{{- if .Values.rbac.routers.istio }}
# Failover: read and set the destination weights of Istio VirtualServices.
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, patch]
{{- end }}
{{- if .Values.rbac.routers.externalDNS }}
# Failover: read and set the weights of ExternalDNS DNSEndpoint records (providerSpecific weight).
- apiGroups: [externaldns.k8s.io]
  resources: [dnsendpoints]
  verbs: [get, patch]
{{- end }}
# Explain decisions: events are created, and patched when a repeat joins a series.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

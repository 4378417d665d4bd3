"""LTI 1.3 Advantage, the service's side: links between LMS courses and aifhub courses, the tool's
key (JWKS), the platform's AGS and NRPS services (:mod:`.client`), roster sync (:mod:`.roster`) and
grade passback (:mod:`.passback`), configured by :class:`.tool.LtiTool`."""

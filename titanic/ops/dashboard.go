package ops

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
)

// static holds the dashboard: plain HTML, CSS and JavaScript, no build
// step and nothing fetched from elsewhere.
//
//go:embed static
var static embed.FS

// contentSecurity lets the page load only its own files and call only
// this origin.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// dashboard serves the embedded files: / is static/index.html. The files
// hold no data, so they are served without the token; the page asks for
// it when the API answers 401.
func (s *Server) dashboard() (http.HandlerFunc, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard files: %w", err)
	}
	files := http.FileServerFS(sub)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurity)
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}, nil
}

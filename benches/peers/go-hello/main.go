// The Go net/http "Hello, World!" program that hello-server replaces.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("addr", os.Getenv("HELLO_LISTEN"), "listen address (default $HELLO_LISTEN)")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "Hello, World!")
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}

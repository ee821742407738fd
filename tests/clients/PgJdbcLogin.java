// A JDBC application logging in through leasegate with pgJDBC (Debian's
// libpostgresql-jdbc-java): prints current_user. The password (a workload's token, say) comes
// from the LG_PASSWORD environment variable so that it never appears in a command line.
// Run by the tests as `java -cp <driver jar> PgJdbcLogin.java <url> <user>`.
import java.sql.*;
import java.util.Properties;

public class PgJdbcLogin {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.setProperty("user", args[1]);
    props.setProperty("password", System.getenv("LG_PASSWORD"));
    try (Connection c = DriverManager.getConnection(args[0], props);
         Statement s = c.createStatement();
         ResultSet r = s.executeQuery("SELECT current_user")) {
      r.next();
      System.out.println(r.getString(1));
    }
  }
}
